"""What every windowed job of repeated work carries (long context, inference): its device, provenance, idle
baseline, one CodeCarbon tracker, and where its results go."""

from __future__ import annotations

import gc
from pathlib import Path

import torch

from ..measurement import IdleBaseline, measure, measure_idle
from ..measurement.codecarbon_estimate import CodeCarbonTracker
from ..provenance import provenance
from ..results import Provenance, Result, write_result
from .training import default_device


class WindowedJob:
    """A job's measuring context: `window(label)` opens a measured window against the job's idle baseline,
    `write` stores a result under `out_dir`, `free` returns cached GPU memory between cells."""

    def __init__(self, out_dir: Path, idle_s: float):
        self.out_dir = Path(out_dir)
        self.device = default_device()
        self.origin = Provenance(**provenance())
        self.idle: IdleBaseline | None = measure_idle(idle_s) if self.device.type == "cuda" else None
        self.codecarbon = CodeCarbonTracker("USA")  # one tracker, one task per window (its start-up costs ~2 s)

    def window(self, label: str, keep_trace: bool = False) -> measure:
        return measure(label, idle=self.idle, keep_trace=keep_trace,
                       codecarbon=self.codecarbon if self.codecarbon.running else True)

    def write(self, name: str, result: Result) -> Result:
        write_result(self.out_dir / name, result)
        return result

    def free(self) -> None:
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
