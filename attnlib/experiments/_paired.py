"""A variant and its reference on one card: the pairing every cost comparison rests on (protocol v3).

`Pair` builds the variant's trainer and warms it up (compilation, CUDA-graph recording, autotuning, allocator
growth: unmeasured; its memory is read now, alone on the card), then the reference's with the same setup; `steady`
runs the two in turns until the card's energy per token settles (`attnlib.measurement.steady`); `windows` then
measures `rounds` rounds of one window of each, in an order drawn afresh per round from a seed. A round is the
replicate: the report takes the variant's ratio to the reference in each round, so what drifts over minutes
(temperature, clocks, the host) cancels within the round, and a ratio measured on one card compares with one
measured on another. Two CUDA-graph trainers share one pool of graph memory (their graphs are branches of one
CUDA-graph tree, never live at once), so pairing costs little memory beyond the other trainer's weights.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch

from ..data import TokenData
from ..measurement import Measurement, SteadyState, SteadyStateConfig, measure, reach_steady_state
from ..measurement.nvml import open_nvml
from ..measurement.trials import round_orders
from ..registry import get_variant
from ..results.schema import ROLES
from .training import TrainConfig, Trainer, check_finite

REFERENCE = "sdpa"  # every comparison's reference: PyTorch's fused attention, what a transformers model runs


def reference_setup(train: TrainConfig, reference: str) -> TrainConfig:
    """The reference's setup beside `train`: the same, with the reference's name and without the variant's own
    parameters (`VARIANTS[variant].params`)."""
    own = set(get_variant(train.variant).params) - set(get_variant(reference).params)
    return dataclasses.replace(train, variant=reference, model={k: v for k, v in train.model.items() if k not in own})


@dataclass
class Warm:
    """A trainer after its unmeasured steps, with their times and (built first) its memory alone on the card."""

    trainer: Trainer
    first_step_s: float
    warmup_s: float
    torch_peak_mem_bytes: int | None = None
    gpu_mem_used_bytes: int | None = None


def warmed(train: TrainConfig, data: TokenData, device: torch.device, steps: int, alone: bool) -> Warm:
    """Build `train`'s trainer and run `steps` unmeasured steps; `alone`: read its memory afterwards (the allocator's
    peak over the steps, and the device memory in use), before any other trainer exists."""
    if alone and device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    trainer = Trainer(train, data, device, total_steps=10**6)
    start = time.perf_counter()
    loss = trainer.step()
    check_finite(loss, "at the first step")
    first_step_s = time.perf_counter() - start  # compilation lands here (.item synchronises)
    for _ in range(steps - 1):
        loss = trainer.step()
    check_finite(loss, "during warm-up")
    warm = Warm(trainer, first_step_s, time.perf_counter() - start)
    if alone and device.type == "cuda":
        warm.torch_peak_mem_bytes = torch.cuda.max_memory_allocated()
        gpus = open_nvml()
        warm.gpu_mem_used_bytes = gpus.memory_used_bytes() if gpus.available else None
    return warm


@dataclass
class MeasuredWindow:
    """One measured window of a pair: its round, its role, what it measured, and the steps it ran."""

    round: int
    role: str
    measurement: Measurement
    steps: int
    final_train_loss: float
    job_wall_s: float  # the window alone; the first window of a pair also carries the pair's set-up


class Pair:
    """The variant's and the reference's trainers of one setup, warmed up on one card: `warm["variant"]`,
    `warm["reference"]`."""

    def __init__(self, variant: TrainConfig, reference: TrainConfig, data: TokenData, device: torch.device,
                 unmeasured_steps: int):
        self.start = time.perf_counter()
        self.warm: dict[str, Warm] = {}
        self.warm["variant"] = warmed(variant, data, device, unmeasured_steps, alone=True)
        self.warm["reference"] = warmed(reference, data, device, unmeasured_steps, alone=False)

    def steady(self, config: SteadyStateConfig) -> SteadyState:
        """Both trainers in turns until the card settles (`reach_steady_state`)."""
        return reach_steady_state({role: w.trainer.steps_for for role, w in self.warm.items()}, config)

    def windows(self, rounds: int, window_s: float, seed: int,
                open_window: Callable[[str, bool], measure], label: str) -> Iterator[MeasuredWindow]:
        """`rounds` rounds of one window of each role of at least `window_s`, each round's order drawn from
        `seed` (`round_orders`); `open_window(label, keep_trace)` opens each window (the first round's keep their
        power trace)."""
        first = True
        for round_index, order in enumerate(round_orders(list(ROLES), rounds, seed)):
            for role in order:
                window_start = time.perf_counter()
                with open_window(f"{label}/round{round_index}/{role}", round_index == 0) as window:
                    steps, loss = self.warm[role].trainer.steps_for(window_s, window)
                yield MeasuredWindow(round_index, role, window.result, steps,
                                   check_finite(loss, "at the end of the window"),
                                   time.perf_counter() - (self.start if first else window_start))
                first = False

    def release(self) -> None:
        self.warm.clear()
