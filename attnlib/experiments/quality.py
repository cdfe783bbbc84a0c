"""Quality runs: train from scratch on a fixed token budget, one run per seed, validation loss along the way.

One process per variant: the trainer is built (and compiled) once, and each seed restarts it with fresh weights,
optimiser state and data order (`Trainer.restart`), so the seeds share the compilation. Each run is one window
over training and its evaluations, against its final validation loss: energy against quality.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from ..data import TokenData
from ..measurement import IdleBaseline, measure, measure_idle
from ..provenance import provenance
from ..results import ModelInfo, Provenance, QualityResult, finished_result, write_result
from .training import TrainConfig, Trainer, check_finite, default_device, failure_status, frozen_gc

NOTEBOOK = "quality.ipynb"


@dataclass
class QualityConfig:
    """One quality job: `train` is the setup (its `mode` runs, its `seed` is replaced by each of `seeds`)."""

    train: TrainConfig
    seeds: list[int] = field(default_factory=lambda: [1, 2, 3])
    tokens: int = 2_457_600  # per seed
    eval_every_tokens: int = 0  # 0: tokens / 8
    eval_batches: int = 16
    idle_s: float = 2.0

    def __post_init__(self) -> None:
        if isinstance(self.train, dict):
            self.train = TrainConfig(**self.train)
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds: one or more distinct seeds, got {self.seeds}")
        if self.tokens < self.train.tokens_per_step:
            raise ValueError(f"tokens: {self.tokens} is less than one step ({self.train.tokens_per_step})")
        if self.eval_batches < 1:
            raise ValueError(f"eval_batches: must be >= 1, got {self.eval_batches}")

    @property
    def steps(self) -> int:
        return self.tokens // self.train.tokens_per_step

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def run_quality_job(config: QualityConfig, out_dir: Path, cache_dir: Path, progress: bool = True) -> list[QualityResult]:
    """One quality run per seed of `config.train.variant`; writes `<variant>__quality__seed<s>.json` files."""
    device, train = default_device(), config.train
    data = train.token_data(cache_dir)
    idle = measure_idle(config.idle_s) if device.type == "cuda" else None
    return quality_runs(config, data, device, idle, Provenance(**provenance()), Path(out_dir), progress)


def quality_runs(config: QualityConfig, data: TokenData, device: torch.device, idle: IdleBaseline | None,
                 origin: Provenance, out_dir: Path, progress: bool = True,
                 trainer: Trainer | None = None) -> list[QualityResult]:
    """The seeds of one quality job, less those `out_dir` already holds (a resumed job). `trainer`: one the caller
    built for `config.train` (the trials job's trainer of the same mode), whose compiled code the seeds then reuse;
    None builds one when a seed is to run."""
    train = config.train
    eval_every = max(1, (config.eval_every_tokens or config.tokens // 8) // train.tokens_per_step)
    results = []
    for seed in config.seeds:
        path = Path(out_dir) / f"{train.variant}__quality__seed{seed}.json"
        if (kept := finished_result(path)) is not None:  # a resumed job keeps the seeds it has
            results.append(kept)
            continue
        common = dict(variant=train.variant, mode=train.mode, arch=train.arch, provenance=origin,
                      config=config.to_dict(), data=data.info, seed=seed)
        start = time.perf_counter()
        try:
            if trainer is None:  # compilation and CUDA-graph recording happen in one unmeasured step
                trainer = Trainer(dataclasses.replace(train, seed=seed), data, device, total_steps=config.steps)
                check_finite(trainer.step(), "at the unmeasured first step")
            trainer.restart(seed, config.steps)
            curve = [{"tokens": 0, "train_loss": None, "gpu_j": 0.0 if device.type == "cuda" else None,
                      "val_loss": trainer.evaluate(config.eval_batches)}]
            tokens = config.steps * train.tokens_per_step
            name = f"{train.variant}/{train.mode}/quality/seed{seed}"
            eval_j = 0.0  # GPU energy of the evaluations inside the window, kept out of the curve's training energy
            with frozen_gc(), measure(name, tokens=tokens, idle=idle,
                                      flops=tokens * trainer.flops.training_flops_per_token) as window:
                bar = tqdm(range(config.steps), desc=f"{train.variant} seed {seed}", disable=not progress)
                for step in bar:
                    loss = trainer.step()
                    if (step + 1) % eval_every == 0 or step + 1 == config.steps:
                        before = window.gpu_j_so_far()
                        val_loss = trainer.evaluate(config.eval_batches)
                        after = window.gpu_j_so_far()
                        curve.append({"tokens": (step + 1) * train.tokens_per_step,
                                      "train_loss": check_finite(loss, f"at step {step + 1}"),
                                      "gpu_j": None if before is None else before - eval_j,  # training's alone
                                      "val_loss": val_loss})
                        eval_j += 0.0 if after is None or before is None else after - before
                        bar.set_postfix(val=f"{curve[-1]['val_loss']:.3f}")
            result = QualityResult(**common, model=ModelInfo(**trainer.describe()), measurement=window.result,
                                   steps=config.steps, val_loss=curve[-1]["val_loss"], loss_curve=curve,
                                   job_wall_s=time.perf_counter() - start)
        except Exception as error:  # a failed seed is a result; the next seed starts afresh
            result = QualityResult(**common, status=failure_status(error), job_wall_s=time.perf_counter() - start,
                                   error=f"{type(error).__name__}: {str(error)[:2000]}")
            trainer = None
            if device.type == "cuda":
                torch.cuda.empty_cache()
        write_result(path, result)
        results.append(result)
    return results
