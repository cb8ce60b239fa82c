"""Which teacher view supervises which student view (H0-mini eq. 1 vs eq. 2)."""

from __future__ import annotations

#: ``loss.pairing`` values
PAIRINGS = ("cross", "same")


def view_pairs(n_teacher: int, n_student: int, pairing: str) -> list[tuple[int, int]]:
    """(teacher view i, student view j) pairs of the image-level losses (DINO, feature CLS).

    Args:
        n_teacher: teacher views (the global views).
        n_student: student views (global, then local crops).
        pairing: ``cross``: every i != j (eq. 1: the teacher on view 1 supervises the student on view 2 and
            back; this is where the robustness to stain and scanner changes comes from); with one view on
            either side the same view is used. ``same``: i == j only (local crops get no teacher).

    Returns:
        The pairs, teacher view major.
    """
    if pairing not in PAIRINGS:
        raise ValueError(f"pairing must be one of {PAIRINGS}, got {pairing!r}")
    if pairing == "same" or (n_teacher == 1 and n_student == 1):
        return [(i, i) for i in range(min(n_teacher, n_student))]
    return [(i, j) for i in range(n_teacher) for j in range(n_student) if i != j]
