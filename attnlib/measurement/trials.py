"""Repeated trials in rounds, each round in a fresh random order from a recorded seed, so that neither drift in
temperature or clocks nor a fixed position in the round favours one candidate.

`round_orders` is the one place interleaving is decided: `run_trials` (candidates in one process) and the
pipeline's plan (jobs in separate processes) both use it.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from tqdm.auto import tqdm

from .stats import Summary, summarize
from .window import Measurement, measure

SUMMARIZED = ("wall_s", "tokens_per_s", "gpu_energy_j", "gpu_energy_net_j", "gpu_j_per_token", "gpu_j_per_token_net",
              "gpu_j_per_flop", "tflops", "gpu_power_mean_w", "gpu_power_peak_w", "torch_peak_mem_bytes",
              "cpu_energy_j", "co2_kg")


def round_orders(names: Sequence[str], rounds: int, seed: int) -> list[list[str]]:
    """`rounds` permutations of `names`, each drawn afresh from `random.Random(seed)`: the same seed gives the
    same orders on every machine."""
    if rounds < 0:
        raise ValueError(f"rounds: must be >= 0, got {rounds}")
    rng = random.Random(seed)
    return [rng.sample(list(names), len(names)) for _ in range(rounds)]


@dataclass(frozen=True)
class Candidate:
    """One thing to measure: `run(window)` does one trial's work inside the open window and reports it with
    `window.add_work(tokens=..., flops=...)` (size it to >= 5 s of steady work)."""

    name: str
    run: Callable[[measure], Any]


@dataclass
class TrialsResult:
    trials: dict[str, list[Measurement]] = field(default_factory=dict)
    orders: list[list[str]] = field(default_factory=list)  # the measured rounds' orders, as run
    seed: int = 0

    def summary(self, name: str) -> dict[str, Summary]:
        """Mean, 95% CI and CV of each figure over the *successful* trials of `name`."""
        ok = [m for m in self.trials[name] if m.status == "ok"]
        return {key: summarize([getattr(m, key) for m in ok]) for key in SUMMARIZED}

    def to_dict(self) -> dict[str, Any]:
        return {"seed": self.seed, "orders": self.orders,
                "candidates": {name: {"trials": [m.to_dict() for m in ms],
                                      "summary": {k: s.to_dict() for k, s in self.summary(name).items()}}
                               for name, ms in self.trials.items()}}


def run_trials(candidates: list[Candidate], *, warmup: int = 1, trials: int = 5, seed: int = 0,
               cooldown_s: float = 0.0, progress: bool = True, **measure_kwargs: Any) -> TrialsResult:
    """Warm every candidate up `warmup` times (unmeasured, inside a throw-away window), then run `trials`
    rounds in `round_orders(..., seed)` order, one measured window per candidate per round, sleeping
    `cooldown_s` between windows. A trial that raises is recorded as failed and the rounds go on.
    `measure_kwargs` go to every `measure` window (e.g. `idle=`)."""
    if not candidates:
        raise ValueError("candidates: nothing to measure")
    names = [c.name for c in candidates]
    if len(set(names)) != len(names):
        raise ValueError(f"candidates: names must be unique, got {names}")
    if warmup < 0 or trials < 1 or cooldown_s < 0:
        raise ValueError(f"warmup >= 0, trials >= 1, cooldown_s >= 0 required, got {warmup}, {trials}, {cooldown_s}")
    by_name = {c.name: c for c in candidates}
    orders = round_orders(names, trials, seed)
    result = TrialsResult({name: [] for name in names}, orders, seed)
    steps = [(name, None) for _ in range(warmup) for name in names]
    steps += [(name, index) for index, order in enumerate(orders) for name in order]
    for name, round_index in tqdm(steps, desc="trials", disable=not progress):
        label = f"{name} warm-up" if round_index is None else f"{name} #{round_index}"
        # warm-up windows only give run() somewhere to report its work: no CodeCarbon start-up for them
        window = measure(label, **(measure_kwargs if round_index is not None else {**measure_kwargs, "codecarbon": False}))
        try:
            with window:
                by_name[name].run(window)
        except Exception:  # recorded in the window's result as failed
            pass
        if round_index is not None:
            result.trials[name].append(window.result)
            if cooldown_s:
                time.sleep(cooldown_s)
    return result
