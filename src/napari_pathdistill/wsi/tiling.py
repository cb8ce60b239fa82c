"""Tile grids at a target resolution (pure numpy / scikit-image, no Qt), with the tissue detection of
``wsi.tissue`` re-exported.

Tiles: a regular grid of ``tile_px`` tiles at ``mpp`` um/px in level-0
coordinates, kept where the tissue fraction is at least ``min_tissue``; pixels are read from the best
pyramid level and resized with antialiasing.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
from skimage.transform import resize

from napari_pathdistill.errors import WSIError
from napari_pathdistill.wsi.pyramid import Pyramid
from napari_pathdistill.wsi.tissue import (
    TissueMaps,
    TissueMask,
    background_rgb,
    detect_tissue,
    mask_from_maps,
    tissue_maps,
    tissue_mask_from_rgb,
)

__all__ = [
    "TileGrid",
    "TissueMaps",
    "TissueMask",
    "background_rgb",
    "check_tile_fits",
    "detect_tissue",
    "grid_to_image",
    "grid_to_shapes",
    "make_tile_grid",
    "mask_from_maps",
    "read_tiles",
    "square_pixel_mpp",
    "tissue_fractions",
    "tissue_maps",
    "tissue_mask_from_rgb",
]


@dataclass
class TileGrid:
    """Tiles kept on a slide. See ``make_tile_grid``.

    Attributes:
        coords: (N, 2) int64 (x, y) top-left of each tile in level-0 px, row-major order.
        tile_px: output tile side in pixels.
        mpp: um/px of the output tiles; None when the slide has no MPP (level-0 pixels used).
        size_level0: tile side in level-0 px (= tile_px * mpp / slide_mpp).
        level: pyramid level the tiles are read from (then resized to tile_px).
        tissue_fraction: (N,) float in [0, 1].
        slide_shape: level-0 (h, w).
        origin: level-0 (x, y) of the lattice's cell (0, 0): (0, 0) for our grids; a feature file's coords may
            lie on a lattice through another point (``inference.lattice.fit_lattice``). ``coords`` stay
            the tiles' own level-0 coords either way.
        tile_level0: a tile's own side in level-0 px where it is not the cell's ``size_level0``: a feature
            file's ``patch_size_level0`` (TRIDENT's overlapping tiles are larger than their step); None: the same.
    """

    coords: np.ndarray
    tile_px: int
    mpp: float | None
    size_level0: float
    level: int
    tissue_fraction: np.ndarray
    slide_shape: tuple[int, int]
    origin: tuple[float, float] = (0.0, 0.0)
    tile_level0: float | None = None

    def __len__(self) -> int:
        return int(self.coords.shape[0])

    def subset(self, idx: np.ndarray | slice) -> TileGrid:
        """The grid of the tiles ``idx`` only (an index array, boolean mask or slice; same geometry)."""
        return replace(self, coords=self.coords[idx], tissue_fraction=self.tissue_fraction[idx])

    @property
    def slide_mpp(self) -> float | None:
        """Level-0 um/px of the slide (None without MPP)."""
        return None if self.mpp is None else self.mpp * self.tile_px / self.size_level0

    @property
    def grid_shape(self) -> tuple[int, int]:
        """(rows, cols) of the full regular grid (kept or not)."""
        h, w = self.slide_shape
        return (int((h - self.origin[1]) // self.size_level0), int((w - self.origin[0]) // self.size_level0))


def tissue_fractions(mask: TissueMask, coords: np.ndarray, size: float) -> np.ndarray:
    """Mean of the mask over each (x, y, size) level-0 box, via a summed-area table.

    The table holds exact int32 pixel counts, accumulated in place: ~4 bytes per mask pixel (a float64 copy of
    the mask and two float64 cumulative sums took ~32, 100 MB on a 2048 x 1536 detection mask, the peak of
    tissue detection)."""
    m = np.asarray(mask.mask, dtype=bool)
    dtype = np.int32 if m.size < 2**31 else np.int64  # a count never exceeds the mask's pixels
    sat = np.zeros((m.shape[0] + 1, m.shape[1] + 1), dtype)
    for y in range(m.shape[0]):  # row by row, in place: a cumsum into the whole view would buffer a copy
        row = sat[y + 1, 1:]
        np.cumsum(m[y], dtype=dtype, out=row)
        row += sat[y, 1:]
    ds = mask.downsample
    x0 = np.clip(np.floor(coords[:, 0] / ds + 0.5), 0, m.shape[1]).astype(int)
    y0 = np.clip(np.floor(coords[:, 1] / ds + 0.5), 0, m.shape[0]).astype(int)
    x1 = np.clip(np.floor((coords[:, 0] + size) / ds + 0.5), 0, m.shape[1]).astype(int)
    y1 = np.clip(np.floor((coords[:, 1] + size) / ds + 0.5), 0, m.shape[0]).astype(int)
    x1, y1 = np.maximum(x1, np.minimum(x0 + 1, m.shape[1])), np.maximum(y1, np.minimum(y0 + 1, m.shape[0]))
    area = np.maximum((x1 - x0) * (y1 - y0), 1)
    counts = sat[y1, x1].astype(np.int64) - sat[y0, x1] - sat[y1, x0] + sat[y0, x0]
    return counts / area


#: largest pixel anisotropy (max(MPP-X, MPP-Y) / min - 1) tiled: square level-0 tiles at the mean um/px are then
#: within 1 % of the asked um on each axis (real scanners differ by < 1 %); beyond, ``make_tile_grid`` refuses
MAX_PIXEL_ANISOTROPY = 0.02


def square_pixel_mpp(pyramid: Pyramid) -> float | None:
    """The one level-0 um/px square tiles are cut at: the mean of MPP-Y and MPP-X (None without MPP).

    Raises:
        WSIError: the pixels are further from square than ``MAX_PIXEL_ANISOTROPY``.
    """
    if not pyramid.mpp:
        return None
    my, mx = (float(v) for v in pyramid.mpp)
    if max(mx, my) / min(mx, my) - 1 > MAX_PIXEL_ANISOTROPY + 1e-9:
        raise WSIError(
            f"{pyramid.path.name} has non-square pixels: MPP-X {mx:g}, MPP-Y {my:g} um/px "
            f"({max(mx, my) / min(mx, my):.3g}:1). Its tiles are cut square in level-0 px, which would be "
            f"{mx / my:.3g} times as wide as high in um; tiling accepts up to {MAX_PIXEL_ANISOTROPY:.0%} "
            "(at the mean um/px). Resample the slide to square pixels first."
        )
    return (mx + my) / 2


def check_tile_fits(pyramid: Pyramid, tile_px: int, mpp: float) -> float:
    """Side (level-0 px) of a ``tile_px`` tile at ``mpp`` um/px (``tile_px`` without an MPP), checked to fit
    in the slide: a cheap check to make before long work (a similarity run's registration) that a grid follows.

    Raises:
        WSIError: the slide is smaller than one tile on a side, or its pixels are not square enough to tile
            (:func:`square_pixel_mpp`).
    """
    slide_mpp = square_pixel_mpp(pyramid)
    in_um = bool(slide_mpp and mpp)
    size = tile_px * float(mpp) / slide_mpp if (slide_mpp and mpp) else float(tile_px)
    h0, w0 = pyramid.levels[0].shape
    if h0 // size == 0 or w0 // size == 0:
        um = f", {w0 * slide_mpp:.0f}x{h0 * slide_mpp:.0f} um" if slide_mpp else ""
        tile = f" ({tile_px} px at {mpp:g} um/px: {tile_px * mpp:.0f} um)" if in_um else ""
        raise WSIError(
            f"{pyramid.path.name} ({w0}x{h0} px{um}) is smaller than one tile of {size:.0f} level-0 px{tile}: "
            "choose fewer tile px or a finer um/px."
        )
    return size


def make_tile_grid(
    pyramid: Pyramid,
    *,
    tile_px: int = 224,
    mpp: float = 0.5,
    min_tissue: float = 0.5,
    mask: TissueMask | None = None,
) -> TileGrid:
    """Regular grid of ``tile_px`` tiles at ``mpp`` um/px, kept where tissue fraction >= ``min_tissue``.

    Args:
        pyramid: the slide.
        tile_px: output tile side (px).
        mpp: target um/px of the tiles (0.5 for H-optimus-0 / H0-mini).
        min_tissue: minimum tissue fraction in [0, 1]; 0 keeps every tile of the grid.
        mask: tissue mask; computed with ``detect_tissue`` when None and ``min_tissue > 0``.

    Returns:
        TileGrid; may be empty (callers decide whether that is an error). The slide's um/px is
        ``pyramid.mpp`` (from the file, or ``open_pyramid``'s ``fallback_mpp``); without one the grid uses
        level-0 pixels (``size_level0 = tile_px``) and ``mpp`` is None. Tiles are square in level-0 px, cut at
        the mean of MPP-Y and MPP-X (:func:`square_pixel_mpp`).

    Raises:
        WSIError: the slide is smaller than one tile, or its pixels are further from square than
            ``MAX_PIXEL_ANISOTROPY`` (its tiles would not be ``tile_px * mpp`` um on both axes).
    """
    if tile_px <= 0 or not 0.0 <= min_tissue <= 1.0:
        raise ValueError(f"tile_px must be > 0 and min_tissue in [0, 1]; got {tile_px}, {min_tissue}")
    size = check_tile_fits(pyramid, tile_px, mpp)
    slide_mpp = square_pixel_mpp(pyramid)
    out_mpp = float(mpp) if slide_mpp else None
    h0, w0 = pyramid.levels[0].shape
    rows, cols = int(h0 // size), int(w0 // size)
    yy, xx = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
    coords = np.stack([np.round(xx.ravel() * size), np.round(yy.ravel() * size)], axis=1).astype(np.int64)
    if min_tissue > 0 and mask is None:
        mask = detect_tissue(pyramid)
    frac = tissue_fractions(mask, coords, size) if mask is not None else np.ones(len(coords))
    keep = frac >= min_tissue if min_tissue > 0 else np.ones(len(coords), bool)
    level = pyramid.best_level_for_downsample(size / tile_px)
    return TileGrid(coords[keep], int(tile_px), out_mpp, float(size), level, frac[keep], (h0, w0))


def read_tiles(pyramid: Pyramid, grid: TileGrid, indices: Sequence[int]) -> np.ndarray:
    """Read tiles of a grid as (B, tile_px, tile_px, 3) uint8 (read at ``grid.level``, antialiased resize)."""
    ds = pyramid.levels[grid.level].downsample
    side = max(1, round(grid.size_level0 / ds))
    out = np.empty((len(indices), grid.tile_px, grid.tile_px, 3), np.uint8)
    for k, i in enumerate(indices):
        x, y = grid.coords[int(i)]
        img = pyramid.read_region((int(x), int(y)), grid.level, (side, side))
        if side != grid.tile_px:
            img = resize(img, (grid.tile_px, grid.tile_px), order=1, anti_aliasing=side > grid.tile_px)
            img = np.clip(np.rint(img * 255.0), 0, 255).astype(np.uint8)
        out[k] = img
    return out


def _layer_units(grid: TileGrid) -> tuple[float, float]:
    """(scale of one tile, size of one level-0 px) in the slide layer's units (um with MPP, else px)."""
    px = grid.slide_mpp or 1.0
    return grid.size_level0 * px, px


def grid_to_image(
    grid: TileGrid, values: np.ndarray, fill: float = 0
) -> tuple[np.ndarray, tuple[float, float], tuple[float, float]]:
    """Paint per-tile values into a (rows, cols[, C]) image aligned with the slide layer.

    Args:
        grid: the tile grid.
        values: (N,) or (N, C) per-tile values.
        fill: value of grid cells without a kept tile.

    Returns:
        (image, napari scale (sy, sx), napari translate (ty, tx)) in the slide layer's units (um if the slide
        has MPP, else level-0 px): a cell's centre lands on its tile's centre.
    """
    values = np.asarray(values)
    if values.shape[0] != len(grid):
        raise ValueError(f"values has {values.shape[0]} rows, grid has {len(grid)} tiles")
    rows, cols = grid.grid_shape
    nan_fill = isinstance(fill, float) and math.isnan(fill)
    dtype = np.result_type(values.dtype, np.float32) if nan_fill else values.dtype
    img = np.full((rows, cols, *values.shape[1:]), fill, dtype=dtype)
    r = np.round((grid.coords[:, 1] - grid.origin[1]) / grid.size_level0).astype(int)
    c = np.round((grid.coords[:, 0] - grid.origin[0]) / grid.size_level0).astype(int)
    img[r, c] = values
    _, scale, translate = grid_placement(grid)
    return img, scale, translate


def grid_placement(grid: TileGrid) -> tuple[tuple[int, int], tuple[float, float], tuple[float, float]]:
    """(rows, cols) of the grid's raster (one cell per grid tile) and its napari scale and translate in the slide
    layer's units (um if the slide has MPP, else level-0 px): a cell's centre lands on its tile's centre."""
    tile, px = _layer_units(grid)
    half = (grid.size_level0 - 1) / 2
    return grid.grid_shape, (tile, tile), ((half + grid.origin[1]) * px, (half + grid.origin[0]) * px)


def grid_to_shapes(grid: TileGrid) -> np.ndarray:
    """Tile outlines as napari rectangles (N, 4, 2) of (y, x) corners in the slide layer's units.

    Corners are at pixel edges: level-0 pixel i spans [i - 0.5, i + 0.5] in napari's pixel-centre convention.
    """
    _, px = _layer_units(grid)
    y0 = (grid.coords[:, 1] - 0.5) * px
    x0 = (grid.coords[:, 0] - 0.5) * px
    s = grid.size_level0 * px
    corners = [(y0, x0), (y0, x0 + s), (y0 + s, x0 + s), (y0 + s, x0)]
    return np.stack([np.stack(c, axis=1) for c in corners], axis=1)
