"""CodeCarbon's offline tracker: CPU and RAM power *estimates* (TDP x load, RAM size) and a grid carbon
intensity for the configured country. No network call. Its GPU figure is ignored: ours comes from NVML."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from .base import Unavailable

JOULES_PER_KWH = 3.6e6


@dataclass(frozen=True)
class CodeCarbonEstimate:
    cpu_energy_j: float
    ram_energy_j: float
    kg_co2_per_kwh: float | None
    cpu_model: str
    method: str


class CodeCarbonTracker:
    """Start/stop wrapper around `codecarbon.OfflineEmissionsTracker` (starting takes about 2 s of hardware
    probing, so the window starts its clock after it). A job with many windows starts one tracker and gives it
    to each window, which then measures a CodeCarbon task (`start_task`/`stop_task`) instead of paying the
    start-up every time."""

    def __init__(self, country_iso_code: str):
        self.country_iso_code = country_iso_code
        self._tracker = None

    @property
    def running(self) -> bool:
        return self._tracker is not None

    def start_task(self, name: str) -> Unavailable | None:
        try:
            self._tracker.start_task(name)
        except Exception as error:
            return Unavailable(f"CodeCarbon could not start a task: {error}")
        return None

    def stop_task(self, name: str) -> CodeCarbonEstimate | Unavailable:
        try:
            data = self._tracker.stop_task(name)
        except Exception as error:
            return Unavailable(f"CodeCarbon failed to stop a task: {error}")
        if data is None:
            return Unavailable("CodeCarbon had no such task")
        if not data.energy_consumed > 0:  # it reports a zero delta for a task it lost or sampled no load in
            return Unavailable("CodeCarbon reported no energy for this task (a task shorter than its sampling, or "
                               "one it lost track of): no estimate rather than a zero")
        return self._estimate(data, self._tracker)

    def start(self) -> Unavailable | None:
        try:
            from codecarbon import OfflineEmissionsTracker

            logging.getLogger("codecarbon").setLevel(logging.ERROR)
            self._tracker = OfflineEmissionsTracker(
                country_iso_code=self.country_iso_code, output_methods=[], log_level="error",
                measure_power_secs=15, tracking_mode="process", allow_multiple_runs=True, gpu_ids=[],
            )
            self._tracker.start()
        except Exception as error:  # missing package, unknown country, ...
            self._tracker = None
            return Unavailable(f"CodeCarbon could not start: {error}")
        return None

    def stop(self) -> CodeCarbonEstimate | Unavailable:
        if self._tracker is None:
            return Unavailable("CodeCarbon was not running")
        tracker, self._tracker = self._tracker, None
        try:
            tracker.stop()
            data = tracker.final_emissions_data
        except Exception as error:
            return Unavailable(f"CodeCarbon failed to stop: {error}")
        return self._estimate(data, tracker)

    def _estimate(self, data, tracker) -> CodeCarbonEstimate:
        cpu = next((h for h in tracker._hardware if type(h).__name__ == "CPU"), None)
        generic = getattr(cpu, "_is_generic_tdp", False)
        method = f"estimated: CodeCarbon {getattr(cpu, '_mode', 'cpu')} model" + (" with a generic TDP" if generic else "")
        intensity = data.emissions / data.energy_consumed if data.energy_consumed > 0 else None
        return CodeCarbonEstimate(
            cpu_energy_j=data.cpu_energy * JOULES_PER_KWH, ram_energy_j=data.ram_energy * JOULES_PER_KWH,
            kg_co2_per_kwh=intensity, cpu_model=str(data.cpu_model), method=method,
        )
