"""Steady state before measuring: run the workload itself until the card's energy per unit of work settles.

A card that starts cool draws less and clocks higher than one that has run for a minute at its power cap, so the
first windows of a job measure the card's warm-up, not the workload (Zeus calls the cure "thermally stable
profiling"; MLPerf Power runs at least 60 s). `reach_steady_state` runs the workloads a job will measure in
alternation, in stretches of `stretch_s`, and stops once each one's energy per unit of work (J/token) changed by
less than `tolerance` between its last two stretches, after at least `min_s` and at most `max_s`. It records how
long that took and whether it settled, so a job that hit the cap says so.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

from .base import GPUBackend
from .window import measure


@dataclass
class SteadyStateConfig:
    """When a card counts as settled: each workload's J/token changed by less than `tolerance` (a fraction)
    between its last two stretches of `stretch_s`, no sooner than `min_s` and no later than `max_s` after the
    start."""

    stretch_s: float = 3.0  # 3 s: 30 updates of the energy counter, whose 100 ms steps blur shorter stretches
    tolerance: float = 0.005
    min_s: float = 12.0
    max_s: float = 60.0

    def __post_init__(self) -> None:
        if not (self.stretch_s > 0 and 0 < self.tolerance < 1 and 0 <= self.min_s <= self.max_s):
            raise ValueError("steady_state: stretch_s > 0, 0 < tolerance < 1 and 0 <= min_s <= max_s required, got "
                             f"{self.stretch_s}, {self.tolerance}, {self.min_s}, {self.max_s}")


@dataclass
class SteadyState:
    """How a job reached steady state: `steady_state_s` of running the workloads, `steady_state_converged` True
    (settled), False (stopped at `max_s` unsettled) or None (no energy counter to judge by:
    `steady_state_reason` says why), and each stretch's workload, J/token and temperature at its end. (The names
    carry their prefix because a result's loader makes each field a column.)"""

    steady_state_s: float
    steady_state_converged: bool | None
    steady_state_stretches: list[dict[str, Any]] = field(default_factory=list)
    steady_state_reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


Workload = Callable[[float, measure], Any]  # runs for about `seconds` inside the open window, reporting its tokens


def reach_steady_state(workloads: dict[str, Workload], config: SteadyStateConfig,
                       gpus: GPUBackend | None = None) -> SteadyState:
    """Run `workloads` (name -> `run(seconds, window)`, e.g. `Trainer.steps_for`) in turns, one stretch each per
    turn, until each one's J/token settles (`SteadyStateConfig`). Without an energy counter (a CPU) nothing is
    run: there is nothing to judge the card's state by."""
    if not workloads:
        raise ValueError("workloads: nothing to bring to steady state")
    start, stretches = time.perf_counter(), []
    while True:
        for name, run in workloads.items():
            with measure(f"steady state: {name}", codecarbon=False, gpus=gpus) as window:
                run(config.stretch_s, window)
            r = window.result
            if r.gpu_j_per_token is None:
                return SteadyState(0.0, None, [], r.reasons.get("gpu_energy_j", "no GPU energy per token"))
            stretches.append({"workload": name, "gpu_j_per_token": r.gpu_j_per_token, "wall_s": r.wall_s,
                              "temperature_c": r.temperature_end_c})
        elapsed = time.perf_counter() - start
        settled = all(_settled([s["gpu_j_per_token"] for s in stretches if s["workload"] == name], config.tolerance)
                      for name in workloads)
        if elapsed >= config.min_s and settled:
            return SteadyState(elapsed, True, stretches)
        if elapsed >= config.max_s:
            return SteadyState(elapsed, False, stretches,
                               f"J/token still changing by {config.tolerance:.1%} or more after {config.max_s:.0f} s")


def _settled(values: list[float], tolerance: float) -> bool:
    return len(values) >= 2 and abs(values[-1] / values[-2] - 1) < tolerance
