"""The tile lattice behind a feature file's level-0 coords: its step and origin (ours, CLAM's, TRIDENT's grids).

Pure numpy. A file states its tile side in px (or not at all, as CLAM's), while the tiles of a slide cut at a
um/px lie ``k * step`` apart with a fractional step in level-0 px, and CLAM starts one grid per tissue contour.
"""

from __future__ import annotations

import numpy as np


def grid_step(coords: np.ndarray) -> int | None:
    """The grid step in level-0 px, or None for a single tile.

    The most common positive difference between neighbouring tiles of one row (same y, by x) or one column (same
    x, by y); the smallest positive difference of the unique x or y values when no two tiles share one. Not the
    smallest difference overall: CLAM starts each tissue contour's grid at its bounding box, so two contours' x
    values may lie 3 px apart.
    """
    diffs = []
    for axis in (0, 1):
        order = np.lexsort((coords[:, axis], coords[:, 1 - axis]))  # by the other axis, then this one
        c = coords[order]
        d = np.diff(c[:, axis])[c[1:, 1 - axis] == c[:-1, 1 - axis]]
        diffs.append(d[d > 0])
    d = np.concatenate(diffs)
    if not len(d):
        d = np.concatenate([np.diff(np.unique(coords[:, i])) for i in (0, 1)])
        return int(d.min()) if len(d) else None
    values, counts = np.unique(d, return_counts=True)
    return int(values[np.argmax(counts)])


def _steps(u: np.ndarray, step: float) -> np.ndarray:
    """Lattice index of each sorted unique value ``u``, counted from its neighbour's (gaps rounded to whole steps,
    so a step rounded to the px does not drift over hundreds of columns)."""
    return np.r_[0.0, np.cumsum(np.round(np.diff(u) / step))]


def _joint_fit(axes: list[np.ndarray], step: float) -> tuple[float, list[float], float]:
    """(step, intercept per axis, largest residual): ``u = intercept_a + k * step`` through each axis's sorted
    unique values, one step shared by both axes (least squares; a slide 600 tiles wide and 5 high gets the step
    of its 600 columns)."""
    for _ in range(2):  # the second pass counts the steps with the fitted one
        ks = [_steps(u, step) for u in axes]
        den = sum(float(((k - k.mean()) ** 2).sum()) for k in ks)
        if den > 0:
            step = (
                sum(float(((k - k.mean()) * (u - u.mean())).sum()) for k, u in zip(ks, axes, strict=True))
                / den
            )
    icpts = [float((u - k * step).mean()) for k, u in zip(ks, axes, strict=True)]
    res = max(float(np.abs(u - (c + k * step)).max()) for k, u, c in zip(ks, axes, icpts, strict=True))
    return step, icpts, res


def fit_lattice(coords: np.ndarray, step0: float) -> tuple[float, tuple[float, float]]:
    """Lattice ``u = origin + k * step`` through the coords' unique x and y values: ``(step, origin)``.

    ``step0`` is the rough (integer) step; rounding to level-0 px makes the true step fractional (a 112 um
    tile at 0.499 um/px is 224.45 px), so cells placed at ``k * 224`` would drift by one px every two tiles: the
    step is fitted by least squares. Coords on no single lattice (CLAM: one grid per tissue contour, each from
    its bounding box) keep ``step0`` and the origin of the most tiles; the others are snapped to its cells.
    """
    axes = [np.unique(coords[:, a]).astype(np.float64) for a in (0, 1)]
    step, origins, res = _joint_fit(axes, float(step0))
    if res > 1.0 or not 0.9 * step0 <= step <= 1.1 * step0:  # not one lattice, to within the px rounding
        step, origins = float(step0), []
        for axis in (0, 1):
            phase, counts = np.unique(np.mod(coords[:, axis], step), return_counts=True)
            origins.append(float(phase[np.argmax(counts)]))
    fold = [float((o + step / 2) % step - step / 2) for o in origins]  # in [-step/2, step/2): cell 0 stays 0
    return step, (fold[0], fold[1])
