"""`measure_ranks`: one measurement window across the ranks of a process group (torchrun, one card per rank).

Each rank reads only its own card (`measure`'s default), and the window's two ends are aligned by barriers: the
window opens when every rank is ready and closes when the slowest has finished, so every card's counter covers
the same span, idle waits included (a rank that waits for a collective still draws power: that is part of the
cost of parallelism). Every rank then holds every rank's `Measurement` and their sum:

    with measure_ranks("train sdpa ddp", tokens=local_tokens, flops=local_flops, idle=idle) as window:
        train_steps()
    window.total.gpu_j_per_token      # all cards' energy over all ranks' tokens
    window.ranks[1].gpu_energy_j      # one card's
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist

from .window import Measurement, derive_rates, measure

SUMMED = ("tokens", "flops", "gpu_count", "gpu_energy_j", "gpu_energy_net_j", "idle_power_w", "cpu_energy_j",
          "ram_energy_j", "co2_kg", "gpu_energy_trace_j")  # extensive figures: the job's is the sum over ranks
LARGEST = ("wall_s", "gpu_power_peak_w", "torch_peak_mem_bytes", "gpu_mem_used_peak_bytes")  # per card: the most


def sum_over_ranks(ranks: list[Measurement]) -> Measurement:
    """The job's figures from every rank's window: energies, tokens and FLOPs summed, the wall time and memory
    peaks the largest (peaks are per card), rates derived again from the sums. A figure that any rank could not
    measure is None, with that rank's reason."""
    if not ranks:
        raise ValueError("ranks: no measurements to sum")
    first = ranks[0]
    total = Measurement(label=first.label, status="ok" if all(r.status == "ok" for r in ranks) else "failed",
                        error="; ".join(f"rank {i}: {r.error}" for i, r in enumerate(ranks) if r.error) or None,
                        environment={"ranks": len(ranks), **{k: v for k, v in first.environment.items() if k not in ("start", "end")}})
    for name in SUMMED + LARGEST:
        values = [getattr(r, name) for r in ranks]
        missing = [i for i, v in enumerate(values) if v is None]
        if missing:
            reason = ranks[missing[0]].reasons.get(name, "not measured")
            total.reasons[name] = f"rank {missing[0]}: {reason}"
            continue
        setattr(total, name, sum(values) if name in SUMMED else max(values))
    for name in ("gpu_energy_source", "idle_power_source", "gpu_power_source", "cpu_energy_source", "co2_source"):
        sources = {getattr(r, name) for r in ranks} - {None}
        setattr(total, name, " | ".join(sorted(sources)) or None)
    total.gpu_power_samples = sum(r.gpu_power_samples for r in ranks)
    updates = [r.energy_counter_updates for r in ranks if r.energy_counter_updates is not None]
    total.energy_counter_updates = min(updates) if len(updates) == len(ranks) else None
    total.warnings = [f"rank {i}: {w}" for i, r in enumerate(ranks) for w in r.warnings]
    if total.gpu_energy_j is not None and total.wall_s:
        total.gpu_power_mean_w = total.gpu_energy_j / total.wall_s  # all cards together
    derive_rates(total)
    return total


class measure_ranks:  # noqa: N801  (a context manager used like a function, as `measure`)
    """A `measure` window on every rank of `group`, aligned by barriers at both ends; afterwards `ranks` (every
    rank's `Measurement`, in rank order) and `total` (`sum_over_ranks`) on every rank. Outside torch.distributed
    it is one rank's window. Keyword arguments go to `measure` (tokens and FLOPs are this rank's)."""

    def __init__(self, label: str, group: Any = None, **kwargs: Any):
        self._window = measure(label, **kwargs)
        self._group = group
        self._distributed = dist.is_available() and dist.is_initialized()
        self.ranks: list[Measurement] = []
        self.total: Measurement | None = None

    def add_work(self, tokens: int = 0, flops: float = 0.0) -> None:
        """Count this rank's work done in the window (see `measure.add_work`)."""
        self._window.add_work(tokens, flops)

    def _align(self) -> None:
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            torch.cuda.synchronize()
        if self._distributed:
            dist.barrier(group=self._group)

    def __enter__(self) -> "measure_ranks":
        self._align()
        self._window.__enter__()
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is None:  # a failed rank does not reach the barrier its peers wait at; they fail on their own
            self._align()
        self._window.__exit__(exc_type, exc, tb)
        mine = self._window.result
        if self._distributed and exc_type is None:
            gathered: list[dict | None] = [None] * dist.get_world_size(self._group)
            dist.all_gather_object(gathered, mine.to_dict(), group=self._group)
            self.ranks = [Measurement(**d) for d in gathered]
        else:
            self.ranks = [mine]
        self.total = sum_over_ranks(self.ranks)
        return False

