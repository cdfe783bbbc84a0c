"""Repeated, interleaved trials (A B C A B C ...) so drift in temperature or clocks does not favour one candidate."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

from tqdm.auto import tqdm

from .stats import Summary, summarize
from .window import Measurement, measure

SUMMARIZED = ("wall_s", "tokens_per_s", "gpu_energy_j", "gpu_energy_net_j", "j_per_token", "j_per_token_net",
              "j_per_flop", "tflops", "mfu", "gpu_power_mean_w", "gpu_power_peak_w", "torch_peak_mem_bytes",
              "cpu_energy_j", "co2_kg")


@dataclass(frozen=True)
class Candidate:
    """One thing to measure: `run()` does one trial's work (size it to >= 5 s of steady work)."""

    name: str
    run: Callable[[], Any]
    tokens: int | None = None  # per call of run()
    flops: float | None = None  # per call of run()


@dataclass
class TrialsResult:
    trials: dict[str, list[Measurement]] = field(default_factory=dict)

    def summary(self, name: str) -> dict[str, Summary]:
        """Mean, 95% CI and CV of each figure over the *successful* trials of `name`."""
        ok = [m for m in self.trials[name] if m.status == "ok"]
        return {key: summarize([getattr(m, key) for m in ok]) for key in SUMMARIZED}

    def to_dict(self) -> dict[str, Any]:
        return {name: {"trials": [m.to_dict() for m in ms], "summary": {k: s.to_dict() for k, s in self.summary(name).items()}}
                for name, ms in self.trials.items()}


def run_trials(candidates: list[Candidate], *, warmup: int = 1, trials: int = 5, cooldown_s: float = 0.0,
               progress: bool = True, **measure_kwargs: Any) -> TrialsResult:
    """Warm every candidate up `warmup` times (unmeasured), then run `trials` interleaved rounds, one measured
    window per candidate per round, sleeping `cooldown_s` between windows. A trial that raises is recorded as
    failed and the rounds go on. `measure_kwargs` go to every `measure` window.
    """
    if not candidates:
        raise ValueError("candidates: nothing to measure")
    names = [c.name for c in candidates]
    if len(set(names)) != len(names):
        raise ValueError(f"candidates: names must be unique, got {names}")
    if warmup < 0 or trials < 1 or cooldown_s < 0:
        raise ValueError(f"warmup >= 0, trials >= 1, cooldown_s >= 0 required, got {warmup}, {trials}, {cooldown_s}")
    result = TrialsResult({c.name: [] for c in candidates})
    steps = [(c, None) for _ in range(warmup) for c in candidates] + [(c, r) for r in range(trials) for c in candidates]
    for candidate, round_index in tqdm(steps, desc="trials", disable=not progress):
        if round_index is None:
            candidate.run()
            continue
        window = measure(f"{candidate.name} #{round_index}", tokens=candidate.tokens, flops=candidate.flops, **measure_kwargs)
        try:
            with window:
                candidate.run()
        except Exception:  # recorded in the window's result as failed
            pass
        result.trials[candidate.name].append(window.result)
        if cooldown_s:
            time.sleep(cooldown_s)
    return result
