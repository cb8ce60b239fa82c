"""Overlapping tiles over a slide region and their attention maps blended into one seamless map (no Qt).

Tiles sit on a lattice anchored at the slide origin with stride ``tile * (1 - overlap)``. Each tile's map is
resampled to ``cells`` x ``cells`` map pixels, weighted by a separable Hann window (``sin^2``; with 50 % overlap
the shifted windows sum to one, a partition of unity) and accumulated into a numerator and a weight canvas, so
the blended value is a weighted mean of the overlapping tiles and tile borders do not show. Only the two
canvases live in memory, whatever the number of tiles.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from napari_pathdistill.wsi.pyramid import Pyramid
from napari_pathdistill.wsi.tiling import TileGrid, TissueMask, square_pixel_mpp, tissue_fractions

#: the longest side of a blended map; a bigger region gets fewer map pixels per tile
MAX_SIDE = 8192


@dataclass(frozen=True)
class RegionGrid:
    """Overlapping tiles over a region and where their maps land on the region's canvas.

    Attributes:
        tiles: the tiles as a :class:`TileGrid` (``coords`` (N, 2) level-0 (x, y) top-left), for ``read_tiles``.
        cells: map pixels per tile side.
        stride_cells: map pixels between neighbouring tiles (``cells`` without overlap).
        offsets: (N, 2) int (row, col) of each tile's first map pixel on the canvas.
        shape: (rows, cols) of the canvas.
        origin: level-0 (x, y) of the canvas' top-left corner.
        cell_px: level-0 px per map pixel.
        candidates: tissue tiles in the region before ``max_tiles`` kept the nearest (``len(self)`` when uncapped).
    """

    tiles: TileGrid
    cells: int
    stride_cells: int
    offsets: np.ndarray
    shape: tuple[int, int]
    origin: tuple[float, float]
    cell_px: float
    candidates: int

    def __len__(self) -> int:
        return len(self.tiles)

    def geometry(self, units: tuple[float, float] | None) -> tuple[tuple[float, float], tuple[float, float]]:
        """napari (scale, translate) of the canvas in slide-layer units: ``units`` (y, x) per level-0 px (the
        layer's scale: MPP-Y and MPP-X), None for level-0 px. Per axis: with MPP-X on both, a slide of non-square
        pixels (up to 2 % accepted) had its maps 2 % too short and too high up on its layer."""
        uy, ux = units if units is not None else (1.0, 1.0)
        # level-0 pixel p is centred at world p * unit; map pixel 0 spans origin .. origin + cell_px
        oy, ox = self.origin[::-1]
        translate = ((oy - 0.5 + self.cell_px / 2) * uy, (ox - 0.5 + self.cell_px / 2) * ux)
        return (self.cell_px * uy, self.cell_px * ux), (float(translate[0]), float(translate[1]))


def _lattice(lo: float, hi: float, size: float, stride: float, limit: float) -> np.ndarray:
    """Tile indices i whose centre i * stride + size / 2 lies in [lo, hi] and whose tile ends inside limit; a span
    narrower than the stride (a view zoomed in within one tile) is widened about its middle to one stride, so
    the tile nearest it is found (an empty region said 'No tissue tile' over tissue)."""
    if hi - lo < stride:
        lo, hi = (lo + hi - stride) / 2, (lo + hi + stride) / 2
    first = max(0, math.ceil((lo - size / 2) / stride))
    last = min(math.floor((hi - size / 2) / stride), math.floor((limit - size) / stride))
    return np.arange(first, last + 1)


def region_grid(
    pyramid: Pyramid,
    mask: TissueMask | None,
    *,
    bbox: tuple[float, float, float, float] | None,
    tile_px: int,
    mpp: float,
    overlap: float = 0.5,
    cells: int = 16,
    min_tissue: float = 0.5,
    max_tiles: int | None = None,
) -> RegionGrid:
    """Overlapping tissue tiles whose centres lie in ``bbox`` (x0, y0, x1, y1 level-0 px; None: whole slide).

    ``max_tiles`` keeps the tiles nearest the box centre. ``overlap`` in [0, 0.9] is the fraction of a tile
    shared with its neighbour. The grid may be empty. Tiles are square in level-0 px at the mean of MPP-Y and
    MPP-X, as ``wsi.tiling`` cuts them.

    Raises:
        WSIError: the slide's pixels are further from square than tiling accepts (``square_pixel_mpp``).
    """
    if not 0.0 <= overlap <= 0.9:
        raise ValueError(f"overlap must be in [0, 0.9], got {overlap}")
    slide_mpp = square_pixel_mpp(pyramid)  # the mean of MPP-Y and MPP-X; more than 2 % apart is refused
    size = tile_px * mpp / slide_mpp if slide_mpp else float(tile_px)
    h0, w0 = pyramid.levels[0].shape
    x0, y0, x1, y1 = bbox if bbox is not None else (0.0, 0.0, float(w0), float(h0))
    stride_cells = max(1, round(cells * (1 - overlap)))
    cols = _lattice(x0, x1, size, size * stride_cells / cells, w0)
    rows = _lattice(y0, y1, size, size * stride_cells / cells, h0)
    while cells > 4 and max(len(rows), len(cols)) * stride_cells + cells > MAX_SIDE:
        cells, stride_cells = cells // 2, max(1, stride_cells // 2)
    cell_px = size / cells
    rr, cc = np.meshgrid(rows, cols, indexing="ij")
    idx = np.stack([cc.ravel(), rr.ravel()], axis=1).astype(np.int64)  # (N, 2) lattice (col, row)
    coords = np.round(idx * stride_cells * cell_px).astype(np.int64)
    frac = tissue_fractions(mask, coords, size) if mask is not None else np.ones(len(coords))
    keep = np.flatnonzero(frac >= min_tissue) if min_tissue > 0 else np.arange(len(coords))
    candidates = len(keep)
    if max_tiles is not None and len(keep) > max_tiles:
        mid = np.array([(x0 + x1) / 2, (y0 + y1) / 2])
        dist = np.linalg.norm(coords[keep] + size / 2 - mid, axis=1)
        keep = np.sort(keep[np.argsort(dist, kind="stable")[:max_tiles]])
    idx, coords = idx[keep], coords[keep]
    start = idx.min(0) if len(idx) else np.zeros(2, np.int64)
    offsets = (idx - start)[:, ::-1] * stride_cells  # (row, col)
    shape = tuple(int(v) for v in offsets.max(0) + cells) if len(idx) else (0, 0)
    level = pyramid.best_level_for_downsample(size / tile_px)
    tiles = TileGrid(
        coords, int(tile_px), mpp if slide_mpp else None, float(size), level, frac[keep], (h0, w0)
    )
    origin = (float(start[0] * stride_cells * cell_px), float(start[1] * stride_cells * cell_px))
    return RegionGrid(tiles, cells, stride_cells, offsets, shape, origin, cell_px, candidates)  # type: ignore[arg-type]


def hann_window(cells: int) -> np.ndarray:
    """(cells, cells) separable sin^2 window, floored at 1e-3 so a tile's edge still counts where it is alone."""
    w = np.sin(np.pi * (np.arange(cells) + 0.5) / cells) ** 2
    return (np.outer(w, w) + 1e-3).astype(np.float32)


def resample(maps: torch.Tensor, cells: int) -> np.ndarray:
    """(B, h, w) -> (B, cells, cells) float32 by bilinear interpolation (any patch grid onto the canvas)."""
    out = F.interpolate(maps.float()[:, None], size=(cells, cells), mode="bilinear", align_corners=False)
    return out[:, 0].numpy()


class Blender:
    """Weighted-mean accumulator of tile maps on one canvas (float32 numerator, shared float32 weights).

    Args:
        region: where the maps go.
        names: one numerator per name (e.g. the two models), all tiles weighted by the same window.
    """

    def __init__(self, region: RegionGrid, names: tuple[str, ...]) -> None:
        self.region = region
        self.window = hann_window(region.cells)
        self.weight = np.zeros(region.shape, np.float32)
        self.sums = {n: np.zeros(region.shape, np.float32) for n in names}

    def add(self, first: int, maps: dict[str, np.ndarray]) -> None:
        """Add (B, cells, cells) maps of tiles ``first .. first + B - 1`` of the region, per name."""
        c = self.region.cells
        count = len(next(iter(maps.values())))
        for k, (r, q) in enumerate(self.region.offsets[first : first + count]):
            self.weight[r : r + c, q : q + c] += self.window
            for name, m in maps.items():
                self.sums[name][r : r + c, q : q + c] += self.window * m[k]

    def result(self, name: str) -> np.ndarray:
        """(rows, cols) float32 blended map, NaN where no tile lies."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.weight > 0, self.sums[name] / self.weight, np.nan).astype(np.float32)


def normalise_region(image: np.ndarray, sample: int = 1 << 22) -> tuple[np.ndarray, float, float]:
    """One normalisation for a whole map: each pixel's percentile rank in the region, in [0, 1], as float16.

    Ranks put two models' maps on the same footing whatever their units (attention probabilities, Grad-CAM
    activations) and peakiness: 0.9 means "more attended than 90 % of this region" on either side, so the top
    10 % of both maps are the pixels above 0.9. The ranks come from 1,001 quantiles of at most ``sample``
    evenly strided finite pixels, so memory stays bounded on any region. Tied pixels get the middle of their ranks
    (a flat map is 0.5 everywhere: not shaded).

    Returns:
        (rank map (NaN kept), raw p1, raw p99) of the map's finite pixels.
    """
    finite = image[np.isfinite(image)]
    if not finite.size:
        return image.astype(np.float16), 0.0, 1.0
    finite = finite[:: max(1, finite.size // sample)]
    q, p = np.percentile(finite, np.linspace(0, 100, 1001)), np.linspace(0.0, 1.0, 1001)
    ranks = np.interp(image, q, p)  # a run of equal quantiles (tied pixels) gives its top rank
    if (np.diff(q) == 0).any():  # ties (a flat map, Grad-CAM's zeros): the middle of the tie's ranks instead
        bottom = np.interp(-image, -q[::-1], p[::-1])  # the reversed lookup gives a tie's bottom rank
        ranks = (ranks + bottom) / 2
    ranks = ranks.astype(np.float16)
    ranks[~np.isfinite(image)] = np.nan
    return ranks, float(np.percentile(finite, 1)), float(np.percentile(finite, 99))
