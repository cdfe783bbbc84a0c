"""Training trials: throughput and energy of one variant in each execution mode, one process per variant.

For each mode, in an order drawn from the job's seed (`round_orders`): build the trainer, run unmeasured steps
(compilation, CUDA-graph recording, autotuning, allocator growth), then `trials` measured windows of at least
`window_s` seconds each. Each window is one `TrialResult`. A mode that fails (out of memory, a graph that cannot
be captured, ...) gives results with that status and the reason, and the other modes go on.

A job may carry the variant's quality runs (`quality`): they run after the windows of their mode with the same
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

from ..data import prepare_data
from ..measurement import IdleBaseline, measure, measure_idle
from ..measurement.codecarbon_estimate import CodeCarbonTracker
from ..measurement.trials import round_orders
from ..provenance import provenance
from ..results import ModelInfo, Provenance, QualityResult, Result, TrialResult, finished_result, write_result
from .quality import QualityConfig, quality_runs
from .training import MODES, TrainConfig, Trainer, check_finite, default_device, failure_status, frozen_gc

NOTEBOOK = "trials.ipynb"


@dataclass
class TrialsConfig:
    """One trials job: `train` is the setup (its `mode` is ignored: every mode in `modes` runs)."""

    train: TrainConfig
    modes: list[str] = field(default_factory=lambda: list(MODES))
    trials: int = 5
    window_s: float = 5.0  # each measured window lasts at least this long (>= 5 s: 50 counter updates)
    unmeasured_steps: int = 10  # compilation and autotuning happen here, outside the windows
    idle_s: float = 2.0  # idle baseline, CUDA context alive, at the start of the job
    order_seed: int = 0  # draws the order of the modes
    compile_scopes: dict[str, str] = field(default_factory=dict)  # mode -> its compile_scope, else train's
    # the variant's quality runs, in this process with the trainer of their mode (its compiled code reused)
    quality: QualityConfig | None = None

    def __post_init__(self) -> None:
        if isinstance(self.train, dict):
            self.train = TrainConfig(**self.train)
        if isinstance(self.quality, dict):
            self.quality = QualityConfig(**self.quality)
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
        if self.trials < 1 or self.window_s <= 0 or self.unmeasured_steps < 1 or self.idle_s <= 0:
            raise ValueError("trials >= 1, window_s > 0, unmeasured_steps >= 1 and idle_s > 0 required, got "
                             f"{self.trials}, {self.window_s}, {self.unmeasured_steps}, {self.idle_s}")

    def mode_config(self, mode: str) -> TrainConfig | None:
        """The training setup of `mode`, with its compile scope; None for a mode the job does not run."""
        if mode not in self.modes:
            return None
        scope = self.compile_scopes.get(mode, self.train.compile_scope)
        return dataclasses.replace(self.train, mode=mode, compile_scope=scope)

    def result_names(self) -> list[str]:
        """The result files of the job (under raw/)."""
        v = self.train.variant
        trials = [f"{v}__{m}__trial{t}.json" for m in self.modes for t in range(self.trials)]
        return trials + ([f"{v}__quality__seed{s}.json" for s in self.quality.seeds] if self.quality else [])

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _trials_of_mode(config: TrialsConfig, mode: str, data, device: torch.device, idle: IdleBaseline | None,
                    origin: Provenance, out_dir: Path, progress: bool, codecarbon: CodeCarbonTracker) -> list[Result]:
    """The mode's windows, then, when the job's quality runs are in this mode, its seeds with the same trainer. A
    resumed job keeps a mode whose windows `out_dir` holds (its missing quality seeds then build their own trainer)
    and measures the others afresh: one mode's windows run together after one compilation."""
    train = config.mode_config(mode)
    with_quality = config.quality is not None and config.quality.train.mode == mode
    kept = [finished_result(out_dir / f"{train.variant}__{mode}__trial{t}.json") for t in range(config.trials)]
    if all(r is not None for r in kept):
        quality = quality_runs(config.quality, data, device, idle, origin, out_dir, progress) if with_quality else []
        torch._dynamo.reset()
        return [*kept, *quality]
    results: list[TrialResult] = []
    quality: list[QualityResult] = []
    common = dict(variant=train.variant, mode=mode, provenance=origin, config=config.to_dict(), data=data.info,
                  order_seed=config.order_seed)
    start = time.perf_counter()
    trainer = None
    try:
        trainer = Trainer(train, data, device, total_steps=10**6)
        model = ModelInfo(**trainer.describe())
        warm_start = time.perf_counter()
        loss = trainer.step()
        check_finite(loss, "at the first step")
        first_step_s = time.perf_counter() - warm_start  # compilation lands here (.item synchronises)
        for _ in range(config.unmeasured_steps - 1):
            loss = trainer.step()
        check_finite(loss, "during warm-up")
        warmup_s = time.perf_counter() - warm_start
        with frozen_gc():  # the windows run with no full collection over the compiled graphs
            for trial in range(config.trials):
                trial_start = time.perf_counter()
                with measure(f"{train.variant}/{mode}/trial{trial}", idle=idle, keep_trace=trial == 0,
                             codecarbon=codecarbon if codecarbon.running else True) as window:
                    steps, loss = trainer.steps_for(config.window_s, window)
                result = TrialResult(**common, trial=trial, model=model, measurement=window.result, steps=steps,
                                     final_train_loss=check_finite(loss, "at the end of the window"),
                                     first_step_s=first_step_s, warmup_s=warmup_s,
                                     job_wall_s=time.perf_counter() - (start if trial == 0 else trial_start))
                results.append(result)
                if progress:
                    m = window.result
                    energy = "" if m.gpu_j_per_token is None else f", {1e3 * m.gpu_j_per_token:.3f} mJ/token"
                    tqdm.write(f"{train.variant}/{mode} trial {trial}: {m.tokens_per_s:,.0f} tok/s{energy}")
        if with_quality:
            quality = quality_runs(config.quality, data, device, idle, origin, out_dir, progress, trainer=trainer)
    except Exception as error:  # every failure becomes a recorded status; the other modes go on
        status, text = failure_status(error), f"{type(error).__name__}: {str(error)[:2000]}"
        results += [TrialResult(**common, trial=t, status=status, error=text, job_wall_s=time.perf_counter() - start)
                    for t in range(len(results), config.trials)]
    finally:
        del trainer
        gc.collect()
        torch._dynamo.reset()  # frees compiled graphs and CUDA-graph pools before the next mode
        if device.type == "cuda":
            torch.cuda.empty_cache()
    for result in results:
        write_result(out_dir / f"{train.variant}__{mode}__trial{result.trial}.json", result)
    if with_quality and not quality:  # the mode failed before its quality runs: they try on their own
        quality = quality_runs(config.quality, data, device, idle, origin, out_dir, progress)
        torch._dynamo.reset()
    return [*results, *quality]


def run_trials_job(config: TrialsConfig, out_dir: Path, cache_dir: Path, progress: bool = True) -> list[Result]:
    """Every mode's trials of `config.train.variant` (and its quality runs, if the job has them); writes one JSON
    result per trial (and seed) into `out_dir`."""
    device = default_device()
    origin = Provenance(**provenance())
    data = prepare_data(config.train.dataset, config.train.seq_len, cache_dir, config.train.max_documents)
    idle = measure_idle(config.idle_s) if device.type == "cuda" else None
    order = round_orders(config.modes, 1, config.order_seed)[0]
    codecarbon = CodeCarbonTracker("USA")  # one tracker for the job, one task per window: its start-up costs ~2 s
    codecarbon.start()  # a failure leaves it stopped; each window then tries on its own and records why
    results = []
    try:
        for mode in tqdm(order, desc=f"{config.train.variant} modes", disable=not progress):
            results += _trials_of_mode(config, mode, data, device, idle, origin, Path(out_dir), progress, codecarbon)
    finally:
        if codecarbon.running:
            codecarbon.stop()
    return results
