"""Long context: what each variant costs per token from 512 to 64K tokens, in training and as a layer alone.

One process per variant, three kinds of cells:

- fast-mode training, paired (`SweepResult` with a `role`): GPT-2 small with `n_positions = seq_len` (learned
  positions extended; costs do not depend on their values), `tokens_per_step` tokens per step (`batch_size =
  tokens_per_step // seq_len`, at least 1), in `fast_mode` (CUDA graphs or compiled) at each of
  `fast_mode_seq_lens`, paired with the reference at the same length (`attnlib.experiments._paired`: steady state,
  then `rounds` rounds of one window of each). Crossovers against the reference come from these ratios.
- eager training at each of `seq_lens` (`SweepResult`, unpaired: the second curve);
- the attention layer alone (`LayerResult`), LongCA-style: input projections, core and output projection on the
  same tokens, `forward` (no autograd) or `forward_backward`, with mask-exact FLOPs (`attnlib.flops.layer_flops`).

Eager and layer cells interleave: in each of `trials` rounds they run in an order drawn afresh from the job's seed,
and each visit measures one window, so slow drift spreads over lengths instead of piling into one. An eager training
cell builds and warms its model (`warmup_steps`, unmeasured) at its first visit and keeps it on the host for the
later rounds (no other cell's model is in GPU memory during a window). The paired cells follow, one length at a
time in a seeded order. A cell that fails (out of memory, unsupported) records each of its windows with that status
and the reason and is not visited again: the grid has no silent holes.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from tqdm.auto import tqdm

from ..archs import dims_of, get_arch
from ..data import TokenData
from ..flops import layer_flops
from ..measurement import SteadyStateConfig
from ..measurement.trials import round_orders
from ..model import build_model
from ..registry import get_variant
from ..results import LayerResult, ModelInfo, Result, SweepResult, finished_result, set_aside
from ..results.schema import ROLES
from ._job import WindowedJob
from ._paired import REFERENCE, Pair, reference_setup
from .training import TrainConfig, Trainer, check_finite, failure_status, frozen_gc

NOTEBOOK = "longcontext.ipynb"
LAYER_PASSES = ("forward", "forward_backward")
SEQ_LENS = [512, 1024, 2048, 4096, 8192, 16384, 32768, 65536]


@dataclass
class LongContextConfig:
    """One variant's long-context job: `train` is the setup (its `seq_len`, `batch_size` and `mode` are set per
    cell)."""

    train: TrainConfig
    seq_lens: list[int] = field(default_factory=lambda: list(SEQ_LENS))  # the eager curve (unpaired)
    tokens_per_step: int = 32768
    fast_mode: str | None = "graph"  # measured paired at fast_mode_seq_lens; None: eager only
    fast_mode_seq_lens: list[int] = field(default_factory=lambda: [512, 8192, 32768, 65536])
    reference: str = REFERENCE
    # variant -> the lengths of fast_mode_seq_lens its job leaves out to fit the GPU budget: its table row says
    # "cut" there and no crossover is claimed for it; the reference (the A/A control at every length) is never cut
    cut_seq_lens: dict[str, list[int]] = field(default_factory=dict)
    rounds: int = 5  # per paired cell: each one window of the variant and one of the reference
    steady_state: SteadyStateConfig = field(default_factory=SteadyStateConfig)
    trials: int = 3  # interleaved rounds over the eager and layer cells
    window_s: float = 2.0  # >= 2 s: >= 20 updates of the energy counter
    warmup_steps: int = 2  # per visit of an eager cell, per trainer of a paired cell; compilation in the first
    layer_passes: list[str] = field(default_factory=lambda: list(LAYER_PASSES))
    layer_window_s: float = 1.0
    layer_warmup_calls: int = 3
    idle_s: float = 2.0
    order_seed: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.train, dict):
            self.train = TrainConfig(**self.train)
        if isinstance(self.steady_state, dict):
            self.steady_state = SteadyStateConfig(**self.steady_state)
        for name in ("seq_lens", "fast_mode_seq_lens"):
            values = getattr(self, name)
            if not all(isinstance(t, int) and t >= 1 for t in values) or len(set(values)) != len(values):
                raise ValueError(f"{name}: distinct integers >= 1, got {values}")
        if not self.seq_lens and not (self.fast_mode and self.fast_mode_seq_lens):
            raise ValueError("seq_lens: at least one length, eager or in the fast mode")
        for variant, cut in self.cut_seq_lens.items():
            get_variant(variant)  # an unknown name fails here
            kept = set(self.fast_mode_seq_lens) - set(cut)
            if variant == self.reference or set(cut) - set(self.fast_mode_seq_lens) or not kept:
                raise ValueError(f"cut_seq_lens: {variant!r} may leave out some of fast_mode_seq_lens "
                                 f"{self.fast_mode_seq_lens}, not all, and the reference none; got {cut}")
        if self.fast_mode not in (None, "compile", "graph"):
            raise ValueError(f"fast_mode: 'compile', 'graph' or None, got {self.fast_mode!r}")
        if set(self.layer_passes) - set(LAYER_PASSES):
            raise ValueError(f"layer_passes: choose among {', '.join(LAYER_PASSES)}, got {self.layer_passes}")
        if self.tokens_per_step < 1 or self.trials < 1 or self.warmup_steps < 1 or self.layer_warmup_calls < 1:
            raise ValueError("tokens_per_step, trials, warmup_steps and layer_warmup_calls must be >= 1, got "
                             f"{self.tokens_per_step}, {self.trials}, {self.warmup_steps}, {self.layer_warmup_calls}")
        if self.rounds < 2:
            raise ValueError(f"rounds: >= 2 (an interval needs two), got {self.rounds}")
        if self.window_s <= 0 or self.layer_window_s <= 0 or self.idle_s <= 0:
            raise ValueError(f"window_s, layer_window_s and idle_s must be > 0, got "
                             f"{self.window_s}, {self.layer_window_s}, {self.idle_s}")
        for seq_len, mode in self.train_cells() + self.paired_cells():  # bad model parameters fail here
            reference_setup(self.cell_config(seq_len, mode), self.reference)

    def batch_size(self, seq_len: int) -> int:
        return max(1, self.tokens_per_step // seq_len)

    def train_cells(self) -> list[tuple[int, str]]:
        """The eager cells (unpaired, interleaved with the layer cells)."""
        return [(t, "eager") for t in self.seq_lens]

    def paired_cells(self) -> list[tuple[int, str]]:
        """The fast-mode cells, each paired with the reference at its length; the lengths cut for this variant left
        out."""
        cut = self.cut_seq_lens.get(self.train.variant, [])
        return [(t, self.fast_mode) for t in self.fast_mode_seq_lens if t not in cut] if self.fast_mode else []

    def paired_name(self, seq_len: int, mode: str, round_index: int, role: str) -> str:
        return f"{self.train.variant}__sweep__{mode}__T{seq_len}__round{round_index}__{role}.json"

    def layer_cells(self) -> list[tuple[int, str]]:
        return [(t, p) for t in self.seq_lens for p in self.layer_passes]

    def cell_config(self, seq_len: int, mode: str) -> TrainConfig:
        """The training setup of one cell: the model sized for `seq_len` (GPT-2's position table; nothing on RoPE
        families), `batch_size(seq_len)` sequences per step."""
        return dataclasses.replace(self.train, mode=mode, seq_len=seq_len, batch_size=self.batch_size(seq_len),
                                   grad_accum=1, model={**self.train.model,
                                                        **get_arch(self.train.arch).length_overrides(seq_len)})

    def result_names(self) -> list[str]:
        """The result files of the job (under raw/)."""
        v, trials = self.train.variant, range(self.trials)
        return ([f"{v}__sweep__{m}__T{t}__trial{i}.json" for t, m in self.train_cells() for i in trials]
                + [self.paired_name(t, m, r, role) for t, m in self.paired_cells() for r in range(self.rounds)
                   for role in ROLES]
                + [f"{v}__layer__{p}__T{t}__trial{i}.json" for t, p in self.layer_cells() for i in trials])

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class _Job(WindowedJob):
    """The state one long-context job carries between its cells: data per length, layers per length, failures."""

    def __init__(self, config: LongContextConfig, out_dir: Path, cache_dir: Path):
        super().__init__(out_dir, config.idle_s)
        self.config, self.cache_dir = config, Path(cache_dir)
        self._data: dict[int, TokenData] = {}
        self._layers: dict[int, tuple[torch.nn.Module, Any]] = {}
        self.trainers: dict[int, Trainer] = {}  # eager training cells, kept on the host between rounds
        # cell name -> (seq_len, mode or layer pass)
        self.cells = {f"train/{m}/T{t}": (t, m) for t, m in config.train_cells()}
        self.cells |= {f"layer/{p}/T{t}": (t, p) for t, p in config.layer_cells()}

    def visit(self, cell: str, trials: list[int]) -> list[Result]:
        seq_len, what = self.cells[cell]
        if cell.startswith("train/"):
            return self.train_visit(seq_len, what, trials)
        return [self.layer_visit(seq_len, what, trial) for trial in trials]

    def failed_trial(self, cell: str, trial: int) -> Result:
        """A later trial of a cell that failed: the same status and reason, without running it again."""
        (seq_len, what), (status, text) = self.cells[cell], self.failed[cell]
        c, variant = self.config, self.config.train.variant
        common = dict(variant=variant, arch=c.train.arch, provenance=self.origin, config=c.to_dict(), seq_len=seq_len,
                      batch_size=c.batch_size(seq_len), trial=trial, order_seed=c.order_seed, status=status,
                      error=text, job_wall_s=0.0)
        if cell.startswith("train/"):
            return self.write(f"{variant}__sweep__{what}__T{seq_len}__trial{trial}.json",
                              SweepResult(mode=what, **common))
        return self.write(f"{variant}__layer__{what}__T{seq_len}__trial{trial}.json",
                          LayerResult(mode="eager", layer_pass=what, **common))

    def release(self) -> None:
        self.trainers.clear()

    def data(self, seq_len: int) -> TokenData:
        if seq_len not in self._data:
            self._data[seq_len] = self.config.train.token_data(self.cache_dir, seq_len)
        return self._data[seq_len]

    # training cells ---------------------------------------------------------------------------------------------
    def train_visit(self, seq_len: int, mode: str, trials: list[int]) -> list[SweepResult]:
        """Measure `trials` windows of one eager training cell. Its trainer is built and warmed at its first visit
        and kept on the host between rounds (moved back, plus one unmeasured step, at each revisit), so that no
        other cell's model is in GPU memory during a window: peak memory and out-of-memory are this cell's."""
        c, train = self.config, self.config.cell_config(seq_len, mode)
        common = dict(variant=train.variant, mode=mode, arch=train.arch, provenance=self.origin, config=c.to_dict(),
                      seq_len=seq_len, batch_size=train.batch_size, order_seed=c.order_seed)
        name = lambda trial: f"{train.variant}__sweep__{mode}__T{seq_len}__trial{trial}.json"  # noqa: E731
        results, start = [], time.perf_counter()
        trainer = self.trainers.pop(seq_len, None)
        try:
            data = self.data(seq_len)
            first_step_s = None
            if trainer is None:
                trainer = Trainer(train, data, self.device, total_steps=10**6)
                first = time.perf_counter()
                check_finite(trainer.step(), "at the first step")
                first_step_s = time.perf_counter() - first
                for _ in range(c.warmup_steps - 1):
                    trainer.step()
            else:
                trainer.move(self.device)
                trainer.step()
            model = ModelInfo(**trainer.describe())
            with frozen_gc():
                for trial in trials:
                    trial_start = time.perf_counter()
                    with self.window(f"{train.variant}/{mode}/T{seq_len}/trial{trial}", trial == 0) as window:
                        steps, loss = trainer.steps_for(c.window_s, window)
                    check_finite(loss, "at the end of the window")
                    wall = time.perf_counter() - (start if trial == trials[0] else trial_start)
                    results.append(self.write(name(trial), SweepResult(
                        **common, trial=trial, data=data.info, model=model, measurement=window.result, steps=steps,
                        first_step_s=first_step_s, job_wall_s=wall)))
            trainer.move(torch.device("cpu"))
            self.trainers[seq_len] = trainer
        except Exception as error:  # the cell's remaining trials record the failure; other cells go on
            status, text = failure_status(error), f"{type(error).__name__}: {str(error)[:2000]}"
            self.failed[f"train/{mode}/T{seq_len}"] = (status, text)
            results += [self.write(name(t), SweepResult(**common, trial=t, status=status, error=text,
                                                        job_wall_s=time.perf_counter() - start))
                        for t in trials[len(results):]]
        finally:
            trainer = None
            self.free()
        return results

    # paired cells -----------------------------------------------------------------------------------------------
    def paired_visit(self, seq_len: int, mode: str) -> list[SweepResult]:
        """The windows of one fast-mode cell paired with the reference at its length (`Pair`); kept where `out_dir`
        holds them all, else measured afresh (the cell's rounds share one steady state)."""
        c = self.config
        keys = [(r, role) for r in range(c.rounds) for role in ROLES]
        kept = [finished_result(self.out_dir / c.paired_name(seq_len, mode, *key)) for key in keys]
        if all(r is not None for r in kept):
            return kept
        set_aside(self.out_dir / c.paired_name(seq_len, mode, *key) for key in keys)  # a partial cell's windows
        train = c.cell_config(seq_len, mode)
        seed = c.order_seed + seq_len
        common = dict(variant=train.variant, mode=mode, arch=train.arch, provenance=self.origin, config=c.to_dict(),
                      seq_len=seq_len, batch_size=train.batch_size, order_seed=seed, reference=c.reference)
        results: dict[tuple[int, str], SweepResult] = {}
        start, pair = time.perf_counter(), None
        try:
            data = self.data(seq_len)
            pair = Pair(train, reference_setup(train, c.reference), data, self.device, c.warmup_steps)
            models = {role: ModelInfo(**w.trainer.describe()) for role, w in pair.warm.items()}
            with frozen_gc():
                steady = pair.steady(c.steady_state)
                for w in pair.windows(c.rounds, c.window_s, seed, self.window, f"{train.variant}/{mode}/T{seq_len}"):
                    warm = pair.warm[w.role]
                    results[(w.round, w.role)] = self.write(c.paired_name(seq_len, mode, w.round, w.role), SweepResult(
                        **common, trial=w.round, role=w.role, data=data.info, model=models[w.role],
                        measurement=w.measurement, steps=w.steps, first_step_s=warm.first_step_s, steady_state=steady,
                        alone_torch_peak_mem_bytes=warm.torch_peak_mem_bytes,
                        alone_gpu_mem_used_bytes=warm.gpu_mem_used_bytes, job_wall_s=w.job_wall_s))
        except Exception as error:  # the cell's missing windows record the failure; other cells go on
            status, text = failure_status(error), f"{type(error).__name__}: {str(error)[:2000]}"
            for r, role in keys:
                if (r, role) not in results:
                    results[(r, role)] = self.write(c.paired_name(seq_len, mode, r, role), SweepResult(
                        **common, trial=r, role=role, status=status, error=text,
                        job_wall_s=time.perf_counter() - start))
        finally:
            if pair is not None:
                pair.release()
            pair = None
            torch._dynamo.reset()
            self.free()
        return [results[key] for key in keys]

    # layer cells ------------------------------------------------------------------------------------------------
    def layer(self, seq_len: int) -> tuple[torch.nn.Module, Any]:
        """The attention layer alone (the family's `attention_alone`) of a one-layer model sized for `seq_len`
        (kept on the host between visits, like the training cells' trainers) and its config."""
        if seq_len not in self._layers:
            train, arch = self.config.cell_config(seq_len, "eager"), get_arch(self.config.train.arch)
            torch.manual_seed(train.seed)
            model = build_model(train.variant, seq_len=seq_len, arch=arch.name,
                                **{**train.model, **arch.layer_overrides(1)})
            self._layers[seq_len] = (arch.attention_alone(model).train(), model.config)
        return self._layers[seq_len]

    def layer_visit(self, seq_len: int, layer_pass: str, trial: int) -> LayerResult:
        """One window of repeated calls of the attention layer alone."""
        c, variant = self.config, self.config.train.variant
        batch = c.batch_size(seq_len)
        common = dict(variant=variant, mode="eager", arch=c.train.arch, provenance=self.origin, config=c.to_dict(),
                      seq_len=seq_len, batch_size=batch, layer_pass=layer_pass, trial=trial, order_seed=c.order_seed)
        name = f"{variant}__layer__{layer_pass}__T{seq_len}__trial{trial}.json"
        start = time.perf_counter()
        try:
            attention, config = self.layer(seq_len)
            attention.to(self.device)
            backward = layer_pass == "forward_backward"
            call = layer_call(attention, batch, seq_len, dims_of(config).width, self.device, backward)
            flops_per_call = layer_flops(attention, config, seq_len, batch, backward)
            for _ in range(c.layer_warmup_calls):
                call()
            with frozen_gc(), self.window(f"{variant}/layer/{layer_pass}/T{seq_len}/trial{trial}", False) as window:
                calls, window_start = 0, time.perf_counter()
                while calls == 0 or time.perf_counter() - window_start < c.layer_window_s:
                    call()
                    calls += 1
                window.add_work(tokens=calls * batch * seq_len, flops=calls * flops_per_call)
            attention.to("cpu")
            self.free()  # the next cell starts from an empty cache: the device memory it shows is its own
            return self.write(name, LayerResult(**common, measurement=window.result, calls=calls,
                                                flops_per_call=flops_per_call, job_wall_s=time.perf_counter() - start))
        except Exception as error:
            status, text = failure_status(error), f"{type(error).__name__}: {str(error)[:2000]}"
            self.failed[f"layer/{layer_pass}/T{seq_len}"] = (status, text)
            self._layers.pop(seq_len, None)
            self.free()
            return self.write(name, LayerResult(**common, status=status, error=text,
                                                job_wall_s=time.perf_counter() - start))


def layer_call(attention: torch.nn.Module, batch: int, seq_len: int, width: int, device: torch.device,
               backward: bool, hidden: torch.Tensor | None = None) -> Callable[[], None]:
    """One call of an attention layer alone (`attention`: hidden states `[B, T, C]` -> `[B, T, C]`, the family's
    `attention_alone`) on fixed random hidden states `[batch, seq_len, width]` (or on `hidden`), under the same
    autocast as training; with `backward`, the backward pass into the input and the weights too."""
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    if hidden is None:
        hidden = torch.randn(batch, seq_len, width, device=device, dtype=dtype)
    hidden.requires_grad_(backward)
    grad = torch.randn_like(hidden) if backward else None

    def call() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            if not backward:
                with torch.no_grad():
                    attention(hidden)
                return
            out = attention(hidden)
        out.backward(grad)
        attention.zero_grad(set_to_none=True)
        hidden.grad = None

    return call


def run_longcontext_job(config: LongContextConfig, out_dir: Path, cache_dir: Path,
                        progress: bool = True) -> list[Result]:
    """Every cell of `config.train.variant`'s long-context grid: the eager and layer cells in `config.trials`
    interleaved rounds, then each paired cell in a seeded order; writes one JSON result per window (or per failed
    window) into `out_dir`."""
    job = _Job(config, out_dir, cache_dir)
    def result_name(cell: str, trial: int) -> str:  # a resumed job reads back the windows it has
        seq_len, what = job.cells[cell]
        kind = "sweep" if cell.startswith("train/") else "layer"
        return f"{config.train.variant}__{kind}__{what}__T{seq_len}__trial{trial}.json"

    results = job.rounds(list(job.cells), set(), config.trials, config.order_seed,
                         f"{config.train.variant} long context", progress, result_name) if job.cells else []
    cells = config.paired_cells()
    order = round_orders(cells, 1, config.order_seed)[0] if cells else []
    job.codecarbon.start()  # one tracker for the paired cells' windows, one task each
    try:
        for seq_len, mode in tqdm(order, desc=f"{config.train.variant} paired cells", disable=not progress):
            results += job.paired_visit(seq_len, mode)
    finally:
        if job.codecarbon.running:
            job.codecarbon.stop()
    return results
