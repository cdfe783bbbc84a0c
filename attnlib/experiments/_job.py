"""What every windowed job of repeated work carries (long context, inference): its device, provenance, idle
baseline, one CodeCarbon tracker, where its results go, and the interleaved rounds over its cells."""

from __future__ import annotations

import gc
from collections.abc import Callable
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..measurement import IdleBaseline, measure, measure_idle
from ..measurement.codecarbon_estimate import CodeCarbonTracker
from ..measurement.trials import round_orders
from ..provenance import provenance
from ..results import Provenance, Result, finished_result, write_result
from .training import default_device


class WindowedJob:
    """A job's measuring context: `window(label)` opens a measured window against the job's idle baseline,
    `write` stores a result under `out_dir`, `free` returns cached GPU memory between cells, `rounds` visits the
    cells. A family's job implements `visit` (measure a cell's windows) and `failed_trial` (a later trial of a
    cell in `failed`, which records it again without running it)."""

    def __init__(self, out_dir: Path, idle_s: float):
        self.out_dir = Path(out_dir)
        self.device = default_device()
        self.origin = Provenance(**provenance())
        self.idle: IdleBaseline | None = measure_idle(idle_s) if self.device.type == "cuda" else None
        self.codecarbon = CodeCarbonTracker("USA")  # one tracker, one task per window (its start-up costs ~2 s)
        self.failed: dict[str, tuple[str, str]] = {}  # cell name -> (status, error)

    def window(self, label: str, keep_trace: bool = False) -> measure:
        return measure(label, idle=self.idle, keep_trace=keep_trace,
                       codecarbon=self.codecarbon if self.codecarbon.running else True)

    def write(self, name: str, result: Result) -> Result:
        write_result(self.out_dir / name, result)
        return result

    def free(self) -> None:
        """On a GPU, collect what the last cell left in reference cycles and hand its cached blocks back, so the
        next cell starts from the same memory. (On a CPU nothing is handed back, and a full collection of a heap
        holding torch and transformers takes about 0.2 s.)"""
        if self.device.type == "cuda":
            gc.collect()
            torch.cuda.empty_cache()

    def visit(self, cell: str, trials: list[int]) -> list[Result]:
        raise NotImplementedError

    def failed_trial(self, cell: str, trial: int) -> Result:
        raise NotImplementedError

    def release(self) -> None:
        """Drop what the job kept between its cells (models on the host), once the rounds end."""

    def rounds(self, cells: list[str], compiled: set[str], trials: int, seed: int, desc: str,
               progress: bool, result_name: Callable[[str, int], str] | None = None) -> list[Result]:
        """`trials` rounds over `cells`, each in an order drawn afresh from `seed`, so that slow drift spreads over
        the cells; a cell of `compiled` compiles once and runs all its windows at its place in the first round.
        With `result_name` (cell, trial -> file name) a job resumes: a window whose result `out_dir` already holds
        is read back, not measured again, so a job longer than one chunk finishes over several."""
        orders = [[cell for cell in order if trial == 0 or cell not in compiled]
                  for trial, order in enumerate(round_orders(cells, trials, seed))]

        def kept(cell: str, trial: int) -> Result | None:
            return finished_result(self.out_dir / result_name(cell, trial)) if result_name else None

        results: list[Result] = []
        self.codecarbon.start()  # a failure leaves it stopped; each window then tries on its own and records why
        try:
            bar = tqdm(total=sum(map(len, orders)), desc=desc, disable=not progress)
            for trial, order in enumerate(orders):
                for cell in order:
                    wanted = list(range(trials)) if cell in compiled else [trial]
                    done = [r for r in (kept(cell, t) for t in wanted) if r is not None]
                    if len(done) == len(wanted):
                        results += done
                    elif cell in self.failed:
                        results.append(self.failed_trial(cell, trial))
                    else:  # a compiled cell measures all its windows again: they share one compilation
                        results += self.visit(cell, wanted)
                    bar.update()
            bar.close()
        finally:
            self.release()
            self.free()
            if self.codecarbon.running:
                self.codecarbon.stop()
        return results
