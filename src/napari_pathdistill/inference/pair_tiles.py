"""Slide B's tiles of a slide pair, matched to slide A's through the registration (pure core, no Qt).

A tile of A maps into B through the affine ``A level-0 -> B level-0`` (``pair_similarity.PairTransform``). When
that affine is a plain change of um/px plus a shift (two scans of one slide), the mapped tile is an axis-aligned
square of B and is cut like any tile (``wsi.tiling.read_tiles``). When it also rotates, shears or stretches the
tissue (consecutive sections, a slide put on the scanner the other way round), that square holds other tissue at
its corners and the tissue turned by the rotation: BIRL's lesion pair is turned by 10 degrees, and a CMU field
rotated by 25 degrees scored a mean cosine of 0.92 against itself instead of 0.98. Such a B tile is resampled
through the affine instead (:func:`read_mapped_tiles`): pixel (u, v) of B's tile shows the tissue of pixel (u, v)
of A's tile, in A's orientation, as PLISM's registered tiles do.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from functools import partial

import numpy as np
from skimage.filters import gaussian

from napari_pathdistill.wsi.pyramid import Pyramid
from napari_pathdistill.wsi.registration import apply_affine, warp_rgb
from napari_pathdistill.wsi.tiling import TileGrid

#: a B tile is resampled through the registration when the axis-aligned cut is off by more than this many
#: output pixels at a corner of the tile
MAX_CORNER_PX = 1.0

_CORNERS = np.array([[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]])


def corner_error_px(linear: np.ndarray, size_a: float, size_b: float, tile_px: int) -> float:
    """Output pixels by which the axis-aligned square of side ``size_b`` (B level-0 px) misses A's tile of side
    ``size_a`` (A level-0 px) mapped by ``linear`` ((2, 2), A px -> B px), at the worst corner."""
    half = _CORNERS * size_a / 2
    mapped, square = half @ np.asarray(linear)[:2, :2].T, _CORNERS * size_b / 2
    return float(np.abs(mapped - square).max() * tile_px / size_b)


def mapped_half_extent(linear: np.ndarray, size_a: float) -> np.ndarray:
    """(2,) half width and height (B level-0 px) of the box around A's tile of side ``size_a`` mapped into B."""
    return np.abs(np.asarray(linear)[:2, :2]) @ np.full(2, size_a / 2)


def footprint(pyramid: Pyramid, grid: TileGrid) -> float:
    """Side (level-0 px) of the square ``read_tiles`` reads for a tile of ``grid``: whole pixels of its level."""
    ds = float(pyramid.levels[grid.level].downsample)
    return max(1, round(grid.size_level0 / ds)) * ds


def read_mapped_tiles(
    pyramid: Pyramid,
    grid: TileGrid,
    indices: Sequence[int],
    *,
    linear: np.ndarray,
    centres: np.ndarray,
    side_a: float,
) -> np.ndarray:
    """B's tiles resampled through the registration: (len(indices), tile_px, tile_px, 3) uint8.

    Args:
        pyramid: slide B.
        grid: B's grid (its ``tile_px``).
        indices: the tiles to read (rows of ``centres``).
        linear: (2, 2) linear part of the A level-0 px -> B level-0 px affine.
        centres: (N, 2) B level-0 (x, y) of each tile's centre (A's tile centre mapped, moved inside B).
        side_a: side (level-0 px of A) of A's tiles as read (:func:`footprint`).

    Output pixel (u, v) shows B at A's tile pixel (u, v) mapped into B (pixel centres, as ``read_tiles``'s
    resize). B is read at the coarsest level finer than the tile needs and low-pass filtered as ``read_tiles``
    does before a downsampling resize; outside B is white.
    """
    t = grid.tile_px
    step = np.asarray(linear, np.float64)[:2, :2] * side_a / t  # B level-0 px per output px along u, v
    scale = float(np.sqrt(abs(np.linalg.det(step))))
    level = pyramid.best_level_for_downsample(scale)
    ds = float(pyramid.levels[level].downsample)
    ext = np.abs(step) @ np.full(2, t / 2) + 2 * ds  # half extent of the region to read
    out = np.empty((len(indices), t, t, 3), np.uint8)
    for k, i in enumerate(indices):
        centre = np.asarray(centres[int(i)], np.float64)
        x0, y0 = np.floor(centre - ext).astype(np.int64)
        w, h = np.ceil(2 * ext / ds).astype(np.int64) + 1
        region = pyramid.read_region((int(x0), int(y0)), level, (int(w), int(h)))[..., :3]
        if scale / ds > 1:  # as skimage's anti-aliased resize: sigma (factor - 1) / 2
            region = gaussian(region, sigma=(scale / ds - 1) / 2, channel_axis=-1, preserve_range=True)
        out_to_l0 = np.eye(3)  # output (u, v) -> B level-0: centre + step @ ((u, v) + 0.5 - t / 2)
        out_to_l0[:2, :2], out_to_l0[:2, 2] = step, centre - step @ np.full(2, t / 2 - 0.5)
        to_region = np.eye(3)  # B level-0 -> region px of the level: (p - x0 + 0.5) / ds - 0.5
        to_region[:2, :2] /= ds
        to_region[:2, 2] = (0.5 - np.array([x0, y0])) / ds - 0.5
        out[k] = warp_rgb(region, to_region @ out_to_l0, (t, t))[0]
    return out


def match_tiles(
    pyr_a: Pyramid,
    grid_a: TileGrid,
    pyr_b: Pyramid,
    grid_b: TileGrid,
    a_to_b: np.ndarray,
    max_overhang: float,
) -> tuple[TileGrid, TileGrid, int, Callable[..., np.ndarray] | None]:
    """The A tiles whose mapped B tile lies inside B, those B tiles, how many were moved inside, and the reader
    of B's tiles (``iter_batches``' ``read_fn``): :func:`read_mapped_tiles` when the registration turns or
    stretches a tile by more than :data:`MAX_CORNER_PX` at a corner, else None (``read_tiles``).

    A B tile overhanging B's edge by at most ``max_overhang`` of its side is moved (clamped) inside B. B's grid
    holds each tile's axis-aligned square of side ``size_level0`` around its centre (the tile itself unless
    resampled).
    """
    size_a, size = grid_a.size_level0, grid_b.size_level0
    resample = corner_error_px(a_to_b, size_a, size, grid_b.tile_px) > MAX_CORNER_PX
    side_a = footprint(pyr_a, grid_a)
    # the aligned cut keeps its centre convention; the resampled one maps A's pixels exactly (centres at -0.5)
    centres = apply_affine(a_to_b, grid_a.coords + (side_a / 2 - 0.5 if resample else size_a / 2))
    half = mapped_half_extent(a_to_b, side_a) if resample else np.full(2, size / 2)
    box = np.rint(centres - half).astype(np.int64)  # top-left of the box around the mapped tile
    h, w = pyr_b.levels[0].shape
    tol = max_overhang * size
    hi = np.array([w, h], dtype=np.float64) - 2 * half
    ok = ((box >= -tol) & (box <= hi + tol)).all(axis=1) & (hi >= 0).all()
    clamped = np.clip(box, 0, np.floor(hi)).astype(np.int64)
    moved = int((ok & (clamped != box).any(axis=1)).sum())
    centres = (centres + (clamped - box))[ok]
    coords_b = np.rint(centres - size / 2).astype(np.int64) if resample else clamped[ok]
    sub_a = grid_a.subset(np.asarray(ok))
    sub_b = replace(grid_b, coords=coords_b, tissue_fraction=np.ones(int(ok.sum())))
    read = partial(read_mapped_tiles, linear=np.asarray(a_to_b)[:2, :2], centres=centres, side_a=side_a)
    return sub_a, sub_b, moved, read if resample else None
