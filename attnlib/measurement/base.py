"""What every hardware backend shares: the explicit 'unavailable' answer."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Unavailable:
    """A reading that cannot be had here, and why. Never a silent zero."""

    reason: str

    def __bool__(self) -> bool:
        return False
