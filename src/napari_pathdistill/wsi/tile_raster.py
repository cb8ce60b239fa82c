"""The tile grid as a Labels raster (pure numpy / dask, no Qt): one texture whatever the tile count.

Every kept tile is a cell of ``MAX_PX_PER_TILE`` px whose first row and column are 0 (the gap that draws the grid's
lines). Its label value is ``2 t + 1`` or ``2 t + 2`` (t: the tile's index) after the cell's checkerboard parity,
so a two-colour cyclic colormap gives any two neighbouring tiles, in a row or a column, different colours;
``features`` row v describes tile (v - 1) // 2 (:func:`raster_features`).

A grid wider than ``MAX_LEVEL_SIDE / MAX_PX_PER_TILE`` tiles is a multiscale raster (lazy dask levels, each half
the previous, down to <= ``MAX_LEVEL_SIDE`` px a side): napari draws the level with one to two texels per screen
pixel. Gaps are drawn on levels with >= 8 texels per tile, the checkerboard on levels with >= 4; coarser levels
have one colour (values ``2 t + 1``), so tiles under about two screen pixels show as an even tint instead of
aliasing (a one-texel-per-tile raster of alternating ids, drawn at several tiles per screen pixel, showed a
3,000-tile-wide grid as stripes).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from napari_pathdistill.wsi.tiling import TileGrid, grid_to_image

if TYPE_CHECKING:
    import pandas as pd

#: raster px per tile at the finest level (a gap of 1 px, then 15 px of colour)
MAX_PX_PER_TILE = 16
#: longest side (px) of the coarsest level (and of a single-level raster): below a canvas's width, so the whole
#: slide in view is never drawn from a coarser texel step than the screen's
MAX_LEVEL_SIDE = 1024
#: the levels' dask chunks (px a side)
CHUNK = 1024


@dataclass
class TileRaster:
    """Tile labels painted on the slide (see the module docstring).

    Attributes:
        data: (rows * k, cols * k) int32 array (one level), or a list of dask arrays (levels, finest first).
        px_per_tile: k, raster px per tile at the finest level.
        scale, translate: napari placement of the finest level (slide-layer units): cells' edges = tiles' edges.
    """

    data: Any
    px_per_tile: int
    scale: tuple[float, float]
    translate: tuple[float, float]

    @property
    def multiscale(self) -> bool:
        """True when ``data`` is a list of levels."""
        return isinstance(self.data, list)


class _Level:
    """Level ``j`` of the raster of ``cells`` ((rows, cols) int32: tile index + 1, 0 off the tiles), read lazily:
    texel y stands for finest texel y 2^j (napari's multiscale convention), i.e. cell (y 2^j) // k."""

    def __init__(self, cells: np.ndarray, k: int, j: int) -> None:
        self.cells, self.k, self.step = cells, k, 2**j
        self.checker = k >= 4 * self.step  # >= 4 texels per tile (>= 2 screen px): checkerboard
        self.gaps = k >= 8 * self.step  # >= 8 texels per tile (>= 4 screen px): grid lines
        self.shape = tuple(-(-n * k // self.step) for n in cells.shape)
        self.dtype, self.ndim = np.dtype(np.int32), 2

    def __getitem__(self, key: tuple[slice, slice]) -> np.ndarray:
        ys, xs = (np.arange(*s.indices(n)) * self.step for s, n in zip(key, self.shape, strict=True))
        r, c = ys // self.k, xs // self.k
        t = self.cells[r[:, None], c[None, :]].astype(np.int32)
        out = np.where(t > 0, 2 * t - 1, 0).astype(np.int32)
        if self.checker:
            out += ((r[:, None] + c[None, :]) & 1).astype(np.int32) * (t > 0)
        if self.gaps:
            out[ys % self.k == 0] = 0
            out[:, xs % self.k == 0] = 0
        return out


def _levels(cells: np.ndarray, k: int) -> list[_Level]:
    """Levels 0, 1, ... until the longest side is <= ``MAX_LEVEL_SIDE``."""
    levels = [_Level(cells, k, 0)]
    while max(levels[-1].shape) > MAX_LEVEL_SIDE:
        levels.append(_Level(cells, k, len(levels)))
    return levels


def tile_id_raster(grid: TileGrid) -> TileRaster:
    """The :class:`TileRaster` of ``grid``: a numpy array when one level is enough, else dask levels."""
    cells, (sy, sx), _ = grid_to_image(grid, np.arange(1, len(grid) + 1, dtype=np.int32), fill=0)
    k = MAX_PX_PER_TILE
    levels = _levels(cells, k)
    if len(levels) == 1:
        data: Any = levels[0][slice(None), slice(None)]
    else:
        import dask.array as da

        meta = np.empty((0, 0), np.int32)
        data = [da.from_array(lv, chunks=CHUNK, asarray=True, fancy=False, meta=meta) for lv in levels]
    px = grid.slide_mpp or 1.0  # raster px p spans [p s - 0.5 px, (p + 1) s - 0.5 px] (s = tile / k)
    scale = (sy / k, sx / k)
    return TileRaster(data, k, scale, (scale[0] / 2 - 0.5 * px, scale[1] / 2 - 0.5 * px))


def tile_of_value(values: np.ndarray) -> np.ndarray:
    """Tile index of raster label values (> 0)."""
    return (np.asarray(values) - 1) // 2


def raster_features(per_tile: dict[str, Any]) -> pd.DataFrame:
    """``features`` of the raster from per-tile columns whose row 0 is the background (``tile_features``): row
    v (label value v) is tile (v - 1) // 2's row, for both of its values.

    A DataFrame, so that categorical columns stay categorical in the layer: napari turns each column of a
    ``features`` dict into ``np.asarray(column)``, which made the integer categoricals float64 and the status
    bar read ``x: 3.14e+03`` instead of ``x: 3136``.
    """
    import pandas as pd

    return pd.DataFrame({name: _repeat_tiles(col) for name, col in per_tile.items()})


def _repeat_tiles(col: Any) -> Any:
    """(N + 1,) column -> (2 N + 1,): row 0 kept, every tile's row twice (a categorical by its codes)."""
    codes = getattr(col, "codes", None)
    if codes is None:
        return np.concatenate([col[:1], np.repeat(col[1:], 2)])
    return type(col).from_codes(
        np.concatenate([codes[:1], np.repeat(codes[1:], 2)]), categories=col.categories
    )
