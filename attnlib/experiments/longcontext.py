"""Long context: what each variant costs per token from 512 to 64K tokens, in training and as a layer alone.

One process per variant, two kinds of cells:

- training (`SweepResult`): GPT-2 small with `n_positions = seq_len` (learned positions extended; costs do not
  depend on their values), `tokens_per_step` tokens per step (`batch_size = tokens_per_step // seq_len`, at least
  1), eager at every length plus `fast_mode` at `fast_mode_seq_lens`;
- the attention layer alone (`LayerResult`), LongCA-style: input projections, core and output projection on the
  same tokens, `forward` (no autograd) or `forward_backward`, with mask-exact FLOPs (`attnlib.flops.layer_flops`).

Interleaving: in each of `trials` rounds the cells run in an order drawn afresh from the job's seed, and each visit
measures one window, so slow drift spreads over lengths instead of piling into one. An eager training cell builds
and warms its model (`warmup_steps`, unmeasured) at its first visit and keeps it on the host for the later rounds
(no other cell's model is in GPU memory during a window); a compiled cell compiles once and runs all its windows
at its first visit. A cell that fails (out of memory, unsupported) records each of its trials with that
status and the reason and is not visited again: the grid has no silent holes.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from ..data import TokenData, prepare_data
from ..flops import layer_flops
from ..model import build_model
from ..results import LayerResult, ModelInfo, Result, SweepResult
from ._job import WindowedJob
from .training import TrainConfig, Trainer, check_finite, failure_status, frozen_gc

NOTEBOOK = "longcontext.ipynb"
LAYER_PASSES = ("forward", "forward_backward")
SEQ_LENS = [512, 1024, 2048, 4096, 8192, 16384, 32768, 65536]


@dataclass
class LongContextConfig:
    """One variant's long-context job: `train` is the setup (its `seq_len`, `batch_size` and `mode` are set per
    cell)."""

    train: TrainConfig
    seq_lens: list[int] = field(default_factory=lambda: list(SEQ_LENS))
    tokens_per_step: int = 32768
    fast_mode: str | None = "graph"  # also measured at fast_mode_seq_lens; None: eager only
    fast_mode_seq_lens: list[int] = field(default_factory=lambda: [4096, 32768])
    trials: int = 3
    window_s: float = 2.0  # >= 2 s: >= 20 updates of the energy counter
    warmup_steps: int = 2  # per visit of an eager cell; compilation happens in the first
    layer_passes: list[str] = field(default_factory=lambda: list(LAYER_PASSES))
    layer_window_s: float = 1.0
    layer_warmup_calls: int = 3
    idle_s: float = 2.0
    order_seed: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.train, dict):
            self.train = TrainConfig(**self.train)
        for name in ("seq_lens", "fast_mode_seq_lens"):
            values = getattr(self, name)
            if not all(isinstance(t, int) and t >= 1 for t in values) or len(set(values)) != len(values):
                raise ValueError(f"{name}: distinct integers >= 1, got {values}")
        if not self.seq_lens:
            raise ValueError("seq_lens: at least one length")
        if self.fast_mode not in (None, "compile", "graph"):
            raise ValueError(f"fast_mode: 'compile', 'graph' or None, got {self.fast_mode!r}")
        if set(self.layer_passes) - set(LAYER_PASSES):
            raise ValueError(f"layer_passes: choose among {', '.join(LAYER_PASSES)}, got {self.layer_passes}")
        if self.tokens_per_step < 1 or self.trials < 1 or self.warmup_steps < 1 or self.layer_warmup_calls < 1:
            raise ValueError("tokens_per_step, trials, warmup_steps and layer_warmup_calls must be >= 1, got "
                             f"{self.tokens_per_step}, {self.trials}, {self.warmup_steps}, {self.layer_warmup_calls}")
        if self.window_s <= 0 or self.layer_window_s <= 0 or self.idle_s <= 0:
            raise ValueError(f"window_s, layer_window_s and idle_s must be > 0, got "
                             f"{self.window_s}, {self.layer_window_s}, {self.idle_s}")
        for seq_len, mode in self.train_cells():  # bad model parameters fail here, before any work
            self.cell_config(seq_len, mode)

    def batch_size(self, seq_len: int) -> int:
        return max(1, self.tokens_per_step // seq_len)

    def train_cells(self) -> list[tuple[int, str]]:
        fast = [(t, self.fast_mode) for t in self.fast_mode_seq_lens] if self.fast_mode else []
        return [(t, "eager") for t in self.seq_lens] + fast

    def layer_cells(self) -> list[tuple[int, str]]:
        return [(t, p) for t in self.seq_lens for p in self.layer_passes]

    def cell_config(self, seq_len: int, mode: str) -> TrainConfig:
        """The training setup of one cell: `n_positions = seq_len`, `batch_size(seq_len)` sequences per step."""
        return dataclasses.replace(self.train, mode=mode, seq_len=seq_len, batch_size=self.batch_size(seq_len),
                                   grad_accum=1, model={**self.train.model, "n_positions": seq_len})

    def result_names(self) -> list[str]:
        """The result files of the job (under raw/)."""
        v, trials = self.train.variant, range(self.trials)
        return ([f"{v}__sweep__{m}__T{t}__trial{i}.json" for t, m in self.train_cells() for i in trials]
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
        common = dict(variant=variant, provenance=self.origin, config=c.to_dict(), seq_len=seq_len,
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
            t = self.config.train
            self._data[seq_len] = prepare_data(t.dataset, seq_len, self.cache_dir, t.max_documents)
        return self._data[seq_len]

    # training cells ---------------------------------------------------------------------------------------------
    def train_visit(self, seq_len: int, mode: str, trials: list[int]) -> list[SweepResult]:
        """Measure `trials` windows of one training cell. An eager cell's trainer is built and warmed at its first
        visit and kept on the host between rounds (moved back, plus one unmeasured step, at each revisit), so that
        no other cell's model is in GPU memory during a window: peak memory and out-of-memory are this cell's. A
        compiled cell is built, compiled and freed in one visit."""
        c, train = self.config, self.config.cell_config(seq_len, mode)
        common = dict(variant=train.variant, mode=mode, provenance=self.origin, config=c.to_dict(),
                      seq_len=seq_len, batch_size=train.batch_size, order_seed=c.order_seed)
        name = lambda trial: f"{train.variant}__sweep__{mode}__T{seq_len}__trial{trial}.json"  # noqa: E731
        results, start, keep = [], time.perf_counter(), mode == "eager"
        trainer = self.trainers.pop(seq_len, None) if keep else None
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
            if keep:
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
            if not keep:
                torch._dynamo.reset()
            self.free()
        return results

    # layer cells ------------------------------------------------------------------------------------------------
    def layer(self, seq_len: int) -> tuple[torch.nn.Module, Any]:
        """The attention module of a one-layer model with `n_positions = seq_len` (kept on the host between
        visits, like the training cells' trainers) and its config."""
        if seq_len not in self._layers:
            train = self.config.cell_config(seq_len, "eager")
            torch.manual_seed(train.seed)
            model = build_model(train.variant, seq_len=seq_len, **{**train.model, "n_layer": 1})
            self._layers[seq_len] = (model.transformer.h[0].attn.train(), model.config)
        return self._layers[seq_len]

    def layer_visit(self, seq_len: int, layer_pass: str, trial: int) -> LayerResult:
        """One window of repeated calls of the attention layer alone."""
        c, variant = self.config, self.config.train.variant
        batch = c.batch_size(seq_len)
        common = dict(variant=variant, mode="eager", provenance=self.origin, config=c.to_dict(), seq_len=seq_len,
                      batch_size=batch, layer_pass=layer_pass, trial=trial, order_seed=c.order_seed)
        name = f"{variant}__layer__{layer_pass}__T{seq_len}__trial{trial}.json"
        start = time.perf_counter()
        try:
            attention, config = self.layer(seq_len)
            attention.to(self.device)
            backward = layer_pass == "forward_backward"
            call = layer_call(attention, batch, seq_len, config.n_embd, self.device, backward)
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
    """One call of an attention layer on fixed random hidden states `[batch, seq_len, width]` (or on `hidden`), under
    the same autocast as training; with `backward`, the backward pass into the input and the weights too."""
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
            out = attention(hidden)[0]
        out.backward(grad)
        attention.zero_grad(set_to_none=True)
        hidden.grad = None

    return call


def run_longcontext_job(config: LongContextConfig, out_dir: Path, cache_dir: Path,
                        progress: bool = True) -> list[Result]:
    """Every cell of `config.train.variant`'s long-context grid, `config.trials` interleaved rounds; writes one JSON
    result per window (or per failed trial) into `out_dir`."""
    job = _Job(config, out_dir, cache_dir)
    compiled = {cell for cell, (_, mode) in job.cells.items() if cell.startswith("train/") and mode != "eager"}
    return job.rounds(list(job.cells), compiled, config.trials, config.order_seed,
                      f"{config.train.variant} long context", progress)
