"""What every hardware backend shares: the explicit 'unavailable' answer, and the GPU backend interface with
its do-nothing stand-in (Zeus' pattern): a window talks to one interface whether or not there is a GPU."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Unavailable:
    """A reading that cannot be had here, and why. Never a silent zero."""

    reason: str

    def __bool__(self) -> bool:
        return False


class GPUBackend(ABC):
    """The GPUs one window measures: energy counter, instantaneous power, memory, clocks."""

    available: bool = True
    reason: str = ""  # why the backend is unavailable (stand-ins only)

    @property
    @abstractmethod
    def count(self) -> int:
        """Devices measured."""

    @abstractmethod
    def energy_mj(self) -> list[int]:
        """Total-energy counter of each device, mJ."""

    @abstractmethod
    def sample(self) -> tuple[float, int]:
        """(summed instantaneous power in W, summed energy counter in mJ), one read per device."""

    @property
    @abstractmethod
    def power_source(self) -> str:
        """Which reading `sample` returns as power."""

    @abstractmethod
    def memory_used_bytes(self) -> int:
        """Device memory in use, all processes."""

    @abstractmethod
    def state(self) -> dict[str, list]:
        """One list per reading, one entry per device, at one instant: `sm_clock_mhz`, `mem_clock_mhz`,
        `temperature_c`, and `clock_event_reasons` (each device's list of reason names) where the GPU reports
        them."""

    @abstractmethod
    def environment(self) -> dict[str, Any]:
        """Names, driver, power limits."""


class NullGPUs(GPUBackend):
    """Stand-in where no GPU can be measured: every reading is empty and `reason` says why."""

    available = False

    def __init__(self, reason: str):
        self.reason = reason

    @property
    def count(self) -> int:
        return 0

    def energy_mj(self) -> list[int]:
        return []

    def sample(self) -> tuple[float, int]:
        return 0.0, 0

    @property
    def power_source(self) -> str:
        return self.reason

    def memory_used_bytes(self) -> int:
        return 0

    def state(self) -> dict[str, list]:
        return {}

    def environment(self) -> dict[str, Any]:
        return {}
