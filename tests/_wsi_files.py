"""Pyramidal TIFF writers for the WSI tests (tifffile), shared by tests/wsi, tests/_qt and the reader tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

SPARSE_SIDE = 100_000
SPARSE_TILE = 256
#: tile indices (row-major, level 0) that hold data in the sparse TIFF; every other tile is empty
SPARSE_FILLED = (0, 5, 391 * 200 + 200)
SPARSE_COLOUR = (200, 100, 150)


def _sparse_tiles(shape: tuple[int, int, int], filled: tuple[int, ...]) -> Iterator[np.ndarray | None]:
    n = (-(-shape[0] // SPARSE_TILE)) * (-(-shape[1] // SPARSE_TILE))
    tile = np.empty((SPARSE_TILE, SPARSE_TILE, 3), np.uint8)
    tile[:] = SPARSE_COLOUR
    for i in range(n):
        yield tile if (i in filled or i == 0) else None


def write_sparse_tiff(path: Path, side: int = SPARSE_SIDE, mpp: float = 0.25) -> Path:
    """A side x side RGB pyramid (SubIFDs, 4 levels) where all but a few tiles are empty (sparse)."""
    import tifffile

    kw = {"dtype": np.uint8, "tile": (SPARSE_TILE, SPARSE_TILE), "compression": "zlib", "photometric": "rgb"}
    with tifffile.TiffWriter(path, bigtiff=True) as tw:
        shape = (side, side, 3)
        res = {"resolution": (1e4 / mpp, 1e4 / mpp), "resolutionunit": "CENTIMETER"}
        tw.write(_sparse_tiles(shape, SPARSE_FILLED), shape=shape, subifds=3, **res, **kw)
        for k in (1, 2, 3):
            shape = (side >> k, side >> k, 3)
            tw.write(_sparse_tiles(shape, ()), shape=shape, subfiletype=1, **kw)
    return path


def write_pyramid_tiff(path: Path, image: np.ndarray, *, levels: int = 3, tile: int = 128, mpp: float | None = 0.5,
                       ome: bool = False) -> list[np.ndarray]:  # fmt: skip
    """Write ``image`` (h, w, 3) as a tiled JPEG-free (zlib) pyramid with SubIFDs; returns the level arrays."""
    import tifffile

    pyramid = [image]
    for _ in range(1, levels):
        prev = pyramid[-1]
        h, w = prev.shape[0] // 2 * 2, prev.shape[1] // 2 * 2
        pyramid.append(prev[:h:2, :w:2].copy())
    kw = {"tile": (tile, tile), "compression": "zlib", "photometric": "rgb"}
    with tifffile.TiffWriter(path, bigtiff=False, ome=ome) as tw:
        res = {} if mpp is None else {"resolution": (1e4 / mpp, 1e4 / mpp), "resolutionunit": "CENTIMETER"}
        meta = {"PhysicalSizeX": mpp, "PhysicalSizeY": mpp} if (ome and mpp) else None
        tw.write(pyramid[0], subifds=levels - 1, metadata=meta, **res, **kw)
        for lvl in pyramid[1:]:
            tw.write(lvl, subfiletype=1, metadata=None, **kw)
    return pyramid
