"""NVIDIA GPUs through NVML: the total-energy counter, instantaneous power, memory, clocks and temperature.

Energy comes from `nvmlDeviceGetTotalEnergyConsumption` (mJ since driver load, Volta and newer), read at the two
synchronised ends of a window, as Zeus and CodeCarbon do. Power for traces comes from the field
`NVML_FI_DEV_POWER_INSTANT` (a 25 ms window updated every 100 ms); `nvmlDeviceGetPowerUsage` is a 1 s moving
average on Hopper and lags the load, so it is only a labelled fallback.
"""

from __future__ import annotations

from typing import Any

from .base import GPUBackend, NullGPUs

# NVML's clock-event ("throttle") reason bits, by the names the results record
CLOCK_EVENT_REASONS = {0x1: "gpu_idle", 0x2: "applications_clocks_setting", 0x4: "sw_power_cap", 0x8: "hw_slowdown",
                       0x10: "sync_boost", 0x20: "sw_thermal_slowdown", 0x40: "hw_thermal_slowdown",
                       0x80: "hw_power_brake_slowdown", 0x100: "display_clock_setting"}


def clock_event_names(mask: int) -> list[str]:
    """The reasons set in an NVML clock-event bit mask, by name (unknown bits as hex)."""
    names = [name for bit, name in CLOCK_EVENT_REASONS.items() if mask & bit]
    rest = mask & ~sum(CLOCK_EVENT_REASONS)
    return names + ([hex(rest)] if rest else [])


class NvmlGPUs(GPUBackend):
    """NVIDIA devices matched to NVML by UUID (the current CUDA device, or all of them)."""

    def __init__(self, pynvml: Any, handles: list[Any]):
        self._nvml, self.handles = pynvml, handles
        self._instant_power = True

    @property
    def count(self) -> int:
        return len(self.handles)

    def energy_mj(self) -> list[int]:
        """Total-energy counter of each device, mJ."""
        return [int(self._nvml.nvmlDeviceGetTotalEnergyConsumption(h)) for h in self.handles]

    def sample(self) -> tuple[float, int]:
        """(summed instantaneous power in W, summed energy counter in mJ) in one NVML call per device.

        The sampler thread calls this ~10 times a second; one call instead of two halves its hand-offs of the
        GIL, which a launch-bound training loop feels. Falls back to the 1 s average power where the
        POWER_INSTANT field is missing."""
        nvml, total_mw, total_mj = self._nvml, 0, 0
        for handle in self.handles:
            if self._instant_power:
                power, energy = nvml.nvmlDeviceGetFieldValues(
                    handle, [nvml.NVML_FI_DEV_POWER_INSTANT, nvml.NVML_FI_DEV_TOTAL_ENERGY_CONSUMPTION])
                if power.nvmlReturn == 0 and energy.nvmlReturn == 0:
                    total_mw += power.value.uiVal
                    total_mj += energy.value.ullVal
                    continue
                self._instant_power = False
            total_mw += nvml.nvmlDeviceGetPowerUsage(handle)
            total_mj += nvml.nvmlDeviceGetTotalEnergyConsumption(handle)
        return total_mw / 1000.0, total_mj

    @property
    def power_source(self) -> str:
        return "NVML_FI_DEV_POWER_INSTANT" if self._instant_power else "nvmlDeviceGetPowerUsage (1 s average)"

    def memory_used_bytes(self) -> int:
        return sum(int(self._nvml.nvmlDeviceGetMemoryInfo(h).used) for h in self.handles)

    def state(self) -> dict[str, list]:
        """Clocks (MHz), temperature (C) and the clock-event reasons in force (why the clocks are below their
        maximum: power cap, thermal or hardware slowdown) of each device: the thermal and DVFS state at one
        instant."""
        nvml = self._nvml
        reasons = getattr(nvml, "nvmlDeviceGetCurrentClocksEventReasons", None) or \
            nvml.nvmlDeviceGetCurrentClocksThrottleReasons  # the older name of the same call
        return {
            "sm_clock_mhz": [nvml.nvmlDeviceGetClockInfo(h, nvml.NVML_CLOCK_SM) for h in self.handles],
            "mem_clock_mhz": [nvml.nvmlDeviceGetClockInfo(h, nvml.NVML_CLOCK_MEM) for h in self.handles],
            "temperature_c": [nvml.nvmlDeviceGetTemperature(h, nvml.NVML_TEMPERATURE_GPU) for h in self.handles],
            "clock_event_reasons": [clock_event_names(int(reasons(h))) for h in self.handles],
        }

    def environment(self) -> dict[str, Any]:
        nvml = self._nvml
        return {
            "gpu_names": [_text(nvml.nvmlDeviceGetName(h)) for h in self.handles],
            "driver": _text(nvml.nvmlSystemGetDriverVersion()),
            "power_limit_w": [nvml.nvmlDeviceGetEnforcedPowerLimit(h) / 1000.0 for h in self.handles],
        }


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def gpu_uuid(device: int | Any = 0) -> str:
    """NVML's name for a CUDA device ("GPU-<uuid>"): the same card under any CUDA_VISIBLE_DEVICES."""
    import torch

    return f"GPU-{torch.cuda.get_device_properties(device).uuid}"


def open_nvml(devices: str = "current") -> GPUBackend:
    """NVML for the current CUDA device (`devices="current"`) or every device torch sees (`"all"`); the
    `NullGPUs` stand-in with the reason where NVML cannot read an energy counter."""
    if devices not in ("current", "all"):
        raise ValueError(f"devices: 'current' or 'all', got {devices!r}")
    try:
        import torch

        if not torch.cuda.is_available():
            return NullGPUs("no CUDA device visible to torch")
        indices = range(torch.cuda.device_count()) if devices == "all" else [torch.cuda.current_device()]
        uuids = [gpu_uuid(i) for i in indices]
    except Exception as error:  # a broken CUDA install is an unavailable GPU, said so
        return NullGPUs(f"CUDA not usable: {error}")
    try:
        import pynvml

        pynvml.nvmlInit()
        handles = [pynvml.nvmlDeviceGetHandleByUUID(u.encode()) for u in uuids]
        gpus = NvmlGPUs(pynvml, handles)
        gpus.energy_mj()  # fails on pre-Volta GPUs and some virtual GPUs
    except ImportError:
        return NullGPUs("nvidia-ml-py (pynvml) is not installed")
    except Exception as error:
        return NullGPUs(f"NVML energy counter not readable: {error}")
    return gpus
