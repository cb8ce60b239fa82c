"""Small typed progress messages yielded by every long-running core generator."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Progress:
    """Progress of a long computation.

    Attributes:
        done: units finished so far.
        total: total units (0 when unknown).
        stage: short human-readable name of the current stage, e.g. ``"embedding"``.
    """

    done: int
    total: int
    stage: str = ""

    @property
    def fraction(self) -> float:
        """Finished fraction in [0, 1] (0 when the total is unknown)."""
        return min(1.0, self.done / self.total) if self.total else 0.0
