"""CPU package and DRAM energy from Intel/AMD RAPL counters in /sys/class/powercap (absent on most VMs,
on our GPU machines and on CI: then `Unavailable`)."""

from __future__ import annotations

from pathlib import Path

from .base import Unavailable

POWERCAP = Path("/sys/class/powercap")


class RaplCounters:
    """Top-level RAPL domains (package-N, and dram where exposed), read in joules with wrap-around handled."""

    def __init__(self, domains: dict[str, Path]):
        self.domains = domains
        self._max_uj = {name: int((path / "max_energy_range_uj").read_text()) for name, path in domains.items()}

    def read_uj(self) -> dict[str, int]:
        return {name: int((path / "energy_uj").read_text()) for name, path in self.domains.items()}

    def joules_between(self, start: dict[str, int], end: dict[str, int]) -> dict[str, float]:
        """Energy per domain between two reads; a counter that wrapped adds its range once."""
        return {name: ((end[name] - start[name]) % self._max_uj[name]) / 1e6 for name in self.domains}


def open_rapl(root: Path = POWERCAP) -> RaplCounters | Unavailable:
    domains = {}
    for zone in sorted(root.glob("intel-rapl:*")) if root.exists() else []:
        try:
            name = (zone / "name").read_text().strip()
            (zone / "energy_uj").read_text()
        except OSError:
            continue
        if name.startswith("package") or name == "dram":
            domains[f"{name}@{zone.name}"] = zone
    if not domains:
        return Unavailable(f"no readable RAPL package counters under {root}")
    return RaplCounters(domains)
