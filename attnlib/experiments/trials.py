"""Training windows of one variant, paired with the reference on the same card: throughput and energy in each
execution mode, one process per variant.

For each mode, in an order drawn from the job's seed (`round_orders`): build the variant's trainer and warm it up
(compilation, CUDA-graph recording, autotuning, allocator growth: `unmeasured_steps`, unmeasured; its memory is
read now, alone on the card), then the reference's (`reference`, sdpa by default, with the same setup), run both
in turns until the card reaches steady state (`attnlib.measurement.steady`), then `rounds` rounds of one window of
each, of at least `window_s` seconds, in an order drawn afresh per round. A round is the replicate: the report
takes the variant's ratio to the reference in each round, so drift in temperature, clocks or the host cancels
within the round, and a ratio measured on one card compares with one measured on another. The reference's own job
(variant == reference) pairs two builds of it: the A/A control, whose interval is the table's noise floor.

Each window is one `TrialResult`. A mode that fails (out of memory, a graph that cannot be captured, ...) gives
results with that status and the reason, and the other modes go on.

A job may carry the variant's quality runs (`quality`): they run after the windows of their mode with the variant's
trainer, so they cost neither a process of their own nor a second compilation. A stopped job resumes: the modes
and seeds whose results exist are kept.
"""

from __future__ import annotations

import dataclasses
import gc
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from ..data import TokenData
from ..measurement import IdleBaseline, SteadyStateConfig, measure, measure_idle
from ..measurement.codecarbon_estimate import CodeCarbonTracker
from ..measurement.trials import round_orders
from ..provenance import provenance
from ..registry import get_variant
from ..results import (ModelInfo, Provenance, QualityResult, Result, TrialResult, finished_result, set_aside,
                       write_result)
from ..results.schema import ROLES
from ._paired import REFERENCE, Pair, reference_setup
from .quality import QualityConfig, quality_runs
from .training import MODES, TrainConfig, default_device, failure_status, frozen_gc

NOTEBOOK = "trials.ipynb"


@dataclass
class TrialsConfig:
    """One paired trials job: `train` is the variant's setup (its `mode` is ignored: every mode in `modes`
    runs); the reference trains with the same setup, less the variant's own parameters."""

    train: TrainConfig
    reference: str = REFERENCE
    modes: list[str] = field(default_factory=lambda: list(MODES))
    rounds: int = 5  # each one window of the variant and one of the reference
    window_s: float = 5.0  # each measured window lasts at least this long (>= 5 s: 50 counter updates)
    unmeasured_steps: int = 10  # compilation and autotuning happen here, outside the windows
    steady_state: SteadyStateConfig = field(default_factory=SteadyStateConfig)
    idle_s: float = 2.0  # idle baseline, CUDA context alive, at the start of the job
    order_seed: int = 0  # draws the order of the modes, and of the two windows in each round
    compile_scopes: dict[str, str] = field(default_factory=dict)  # mode -> its compile_scope, else train's
    # the variant's quality runs, in this process with the trainer of their mode (its compiled code reused)
    quality: QualityConfig | None = None

    def __post_init__(self) -> None:
        if isinstance(self.train, dict):
            self.train = TrainConfig(**self.train)
        if isinstance(self.quality, dict):
            self.quality = QualityConfig(**self.quality)
        if isinstance(self.steady_state, dict):
            self.steady_state = SteadyStateConfig(**self.steady_state)
        get_variant(self.reference)
        if set(self.compile_scopes) - {"compile", "graph"}:
            raise ValueError(f"compile_scopes: keys are compiled modes (compile, graph), got {sorted(self.compile_scopes)}")
        for mode, scope in self.compile_scopes.items():
            dataclasses.replace(self.train, mode=mode, compile_scope=scope)  # ValueError for a bad scope
        unknown = set(self.modes) - set(MODES)
        if unknown or not self.modes:
            raise ValueError(f"modes: choose among {', '.join(MODES)}, got {self.modes}")
        if self.quality is not None and self.quality.train != self.mode_config(self.quality.train.mode):
            raise ValueError("quality: its training setup must be this job's in one of its modes, got "
                             f"{self.quality.train} against {self.mode_config(self.quality.train.mode)}")
        if self.rounds < 2 or self.window_s <= 0 or self.unmeasured_steps < 1 or self.idle_s <= 0:
            raise ValueError("rounds >= 2 (an interval needs two), window_s > 0, unmeasured_steps >= 1 and "
                             f"idle_s > 0 required, got {self.rounds}, {self.window_s}, {self.unmeasured_steps}, "
                             f"{self.idle_s}")

    def mode_config(self, mode: str) -> TrainConfig | None:
        """The training setup of `mode`, with its compile scope; None for a mode the job does not run."""
        if mode not in self.modes:
            return None
        scope = self.compile_scopes.get(mode, self.train.compile_scope)
        return dataclasses.replace(self.train, mode=mode, compile_scope=scope)

    def reference_config(self, mode: str) -> TrainConfig:
        """The reference's setup in `mode` (`reference_setup`)."""
        return reference_setup(self.mode_config(mode), self.reference)

    def window_name(self, mode: str, round_index: int, role: str) -> str:
        return f"{self.train.variant}__{mode}__round{round_index}__{role}.json"

    def result_names(self) -> list[str]:
        """The result files of the job (under raw/)."""
        windows = [self.window_name(m, r, role) for m in self.modes for r in range(self.rounds) for role in ROLES]
        return windows + ([f"{self.train.variant}__quality__seed{s}.json" for s in self.quality.seeds]
                          if self.quality else [])

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _paired_mode(config: TrialsConfig, mode: str, data: TokenData, device: torch.device, idle: IdleBaseline | None,
                 origin: Provenance, out_dir: Path, progress: bool, codecarbon: CodeCarbonTracker) -> list[Result]:
    """The mode's paired rounds (`Pair`), then, when the job's quality runs are in this mode, its seeds with the
    variant's trainer. A resumed job keeps a mode whose windows `out_dir` holds (its missing quality seeds then
    build their own trainer) and measures the others afresh: a mode's rounds share one steady state."""
    train = config.mode_config(mode)
    with_quality = config.quality is not None and config.quality.train.mode == mode
    keys = [(r, role) for r in range(config.rounds) for role in ROLES]
    kept = {key: finished_result(out_dir / config.window_name(mode, *key)) for key in keys}
    if all(r is not None for r in kept.values()):
        quality = quality_runs(config.quality, data, device, idle, origin, out_dir, progress) if with_quality else []
        torch._dynamo.reset()
        return [*kept.values(), *quality]
    set_aside(out_dir / config.window_name(mode, *key) for key in keys)  # a partial mode's windows
    seed = config.order_seed + MODES.index(mode)
    common = dict(variant=train.variant, mode=mode, arch=train.arch, provenance=origin, config=config.to_dict(),
                  data=data.info, order_seed=seed, reference=config.reference)
    results: dict[tuple[int, str], TrialResult] = {}
    quality: list[QualityResult] = []
    start = time.perf_counter()
    pair = None

    def open_window(label: str, keep_trace: bool) -> measure:
        return measure(label, idle=idle, keep_trace=keep_trace, codecarbon=codecarbon if codecarbon.running else True)

    try:
        pair = Pair(train, config.reference_config(mode), data, device, config.unmeasured_steps)
        models = {role: ModelInfo(**w.trainer.describe()) for role, w in pair.warm.items()}
        with frozen_gc():  # the windows run with no full collection over the compiled graphs
            steady = pair.steady(config.steady_state)
            if progress:
                tqdm.write(f"{train.variant}/{mode}: steady state after {steady.steady_state_s:.0f} s "
                           f"(converged: {steady.steady_state_converged})")
            for w in pair.windows(config.rounds, config.window_s, seed, open_window, f"{train.variant}/{mode}"):
                warm = pair.warm[w.role]
                results[(w.round, w.role)] = TrialResult(
                    **common, round=w.round, role=w.role, model=models[w.role], measurement=w.measurement,
                    steps=w.steps, final_train_loss=w.final_train_loss, first_step_s=warm.first_step_s,
                    warmup_s=warm.warmup_s, steady_state=steady, alone_torch_peak_mem_bytes=warm.torch_peak_mem_bytes,
                    alone_gpu_mem_used_bytes=warm.gpu_mem_used_bytes, job_wall_s=w.job_wall_s)
                if progress and w.role == "variant":
                    tqdm.write(f"{train.variant}/{mode} round {w.round}: {w.measurement.tokens_per_s:,.0f} tok/s")
        if with_quality:
            quality = quality_runs(config.quality, data, device, idle, origin, out_dir, progress,
                                   trainer=pair.warm["variant"].trainer)
    except Exception as error:  # every failure becomes a recorded status; the other modes go on
        status, text = failure_status(error), f"{type(error).__name__}: {str(error)[:2000]}"
        for round_index, role in keys:
            if (round_index, role) not in results:
                results[(round_index, role)] = TrialResult(**common, round=round_index, role=role, status=status,
                                                           error=text, job_wall_s=time.perf_counter() - start)
    finally:
        if pair is not None:
            pair.release()
        pair = None
        gc.collect()
        torch._dynamo.reset()  # frees compiled graphs and CUDA-graph pools before the next mode
        if device.type == "cuda":
            torch.cuda.empty_cache()
    for (round_index, role), result in results.items():
        write_result(out_dir / config.window_name(mode, round_index, role), result)
    if with_quality and not quality:  # the mode failed before its quality runs: they try on their own
        quality = quality_runs(config.quality, data, device, idle, origin, out_dir, progress)
        torch._dynamo.reset()
    return [*(results[key] for key in keys), *quality]


def run_trials_job(config: TrialsConfig, out_dir: Path, cache_dir: Path, progress: bool = True) -> list[Result]:
    """Every mode's paired rounds of `config.train.variant` against the reference (and its quality runs, if the job
    has them); writes one JSON result per window (and seed) into `out_dir`."""
    device = default_device()
    origin = Provenance(**provenance())
    data = config.train.token_data(cache_dir)
    idle = measure_idle(config.idle_s) if device.type == "cuda" else None
    order = round_orders(config.modes, 1, config.order_seed)[0]
    codecarbon = CodeCarbonTracker("USA")  # one tracker for the job, one task per window: its start-up costs ~2 s
    codecarbon.start()  # a failure leaves it stopped; each window then tries on its own and records why
    results = []
    try:
        for mode in tqdm(order, desc=f"{config.train.variant} modes", disable=not progress):
            results += _paired_mode(config, mode, data, device, idle, origin, Path(out_dir), progress, codecarbon)
    finally:
        if codecarbon.running:
            codecarbon.stop()
    return results
