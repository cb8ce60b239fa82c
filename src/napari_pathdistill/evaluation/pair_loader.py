"""Features of slide pairs for the PLISM run (``plism.iter_robustness``): each slide read once, the rows of two
slides matched by position, by level-0 coordinates, or by grid cell (registered scans at other um/px)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from napari_pathdistill.errors import EvaluationError
from napari_pathdistill.evaluation.features_io import load_features, match_by_coords, tile_grid
from napari_pathdistill.evaluation.manifest import SlideEntry
from napari_pathdistill.metrics.pairs import check_finite


def pair_loader(
    entries: Sequence[SlideEntry], subset: np.ndarray | None, strict: bool = False
) -> Callable[[str, str], tuple[np.ndarray, np.ndarray]]:
    """Matched features of two slides; every slide is kept in memory once read (it is in n_slides - 1 pairs).

    Rows are matched by position when both slides have identical coordinates (PLISM, offline benchmark), else
    by equal coordinates (tiles of registered slides written by ``pathdistill embed``) unless ``strict``
    (plismbench: coordinates that differ between two slides are an error). With plismbench's 8,139-tile
    subset and 768-d features, 91 slides take 2.3 GB of float32.
    """
    paths = {e.slide: e.path for e in entries}
    cache: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def load(slide: str) -> tuple[np.ndarray, np.ndarray]:
        if slide not in cache:
            path = paths[slide]
            if path is None:
                raise EvaluationError(f"manifest row {slide!r} has no features path")
            feats, coords = load_features(path)
            if subset is not None and len(subset) and subset.max() >= len(feats):
                raise EvaluationError(
                    f"the tile subset indexes tile {subset.max()}, but {slide!r} ({path}) has only "
                    f"{len(feats)} tiles; give a subset made for these features"
                )
            cache[slide] = (feats, coords) if subset is None else (feats[subset], coords[subset])
            check_finite(cache[slide][0], f"{slide!r} ({path})")
        return cache[slide]

    grids: dict[str, tuple[np.ndarray, float] | None] = {}

    def grid(slide: str) -> tuple[np.ndarray, float] | None:
        """The slide's tile-grid cells (subset rows) and cell um (``features_io.tile_grid``), read once."""
        if slide not in grids:
            path = paths[slide]
            found = None if path is None or Path(path).suffix == ".npy" else tile_grid(path)
            if found is not None and subset is not None:
                found = (found[0][subset], found[1])
            grids[slide] = found
        return grids[slide]

    def load_pair(sa: str, sb: str) -> tuple[np.ndarray, np.ndarray]:
        (fa, ca), (fb, cb) = load(sa), load(sb)
        if ca.shape == cb.shape and np.array_equal(ca, cb):
            return fa, fb
        if strict:
            raise EvaluationError(
                f"{sa} and {sb} have different tile coordinates; plismbench features must list the same tiles "
                "in the same order in every slide (re-extract with `pathdistill eval plism-extract`)"
            )
        ia, ib = match_by_coords(ca, cb)
        if len(ia) < 2:
            ia, ib = match_by_grid(grid(sa), grid(sb))
        if len(ia) < 2:
            raise EvaluationError(
                f"{sa} and {sb} share fewer than 2 tile coordinates (level-0 px, nor grid cells of the same um "
                "size); are they registered?"
            )
        return fa[ia], fb[ib]

    return load_pair


def match_by_grid(
    grid_a: tuple[np.ndarray, float] | None, grid_b: tuple[np.ndarray, float] | None
) -> tuple[np.ndarray, np.ndarray]:
    """Rows of two HDF5 feature files matched by grid cell (``features_io.tile_grid``: (cells, cell um) each):
    registered scans at different um/px, whose level-0 coords differ; cells must have the same side in um (1 %).
    Empty otherwise."""
    if grid_a is None or grid_b is None or abs(grid_a[1] / grid_b[1] - 1) > 0.01:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    return match_by_coords(grid_a[0], grid_b[0])
