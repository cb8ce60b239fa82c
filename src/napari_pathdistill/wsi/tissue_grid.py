"""One core call for the "Tissue and tile grid" widget and ``pathdistill tiles``: mask + grid, layer-ready.

Everything is expressed in the slide layer's units (um when the slide has MPP, else level-0 px) so that the
mask and the tile grid (two Labels layers) sit exactly on the slide image layer. The grid is a raster of tile
labels (``wsi.tile_raster.tile_id_raster``: 16 px per tile, multiscale when large): one texture per level, so
panning costs the same with 100 or 100,000 tiles (a Shapes layer of rectangles costs ~0.5 s per pan step at 14k).
"""

from __future__ import annotations

import threading
from collections.abc import Generator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from napari_pathdistill.progress import Progress, drain, raise_if_cancelled
from napari_pathdistill.wsi.pyramid import open_pyramid
from napari_pathdistill.wsi.tile_raster import TileRaster, tile_id_raster
from napari_pathdistill.wsi.tiling import TileGrid, grid_to_shapes, make_tile_grid, square_pixel_mpp
from napari_pathdistill.wsi.tissue import (
    TISSUE_THRESHOLD,
    TissueMaps,
    TissueMask,
    detect_tissue,
    detection_thumbnail,
    mask_from_maps,
    tissue_maps,
    tissue_smooth_px,
)


def tile_features(grid: TileGrid) -> dict[str, Any]:
    """Columns for the grid layer's ``features``: row i describes label value i (row 0: no tile).

    ``tile`` is the tile's index in the grid, ``x``, ``y`` its level-0 top-left corner (integers: napari's status
    bar prints a float with 3 significant digits, x 3136 as "3.14e+03"); row 0 is empty (:func:`background_row`),
    so hovering glass shows no tile.
    """
    xy = np.asarray(grid.coords, dtype=np.int64)
    return {
        "tile": background_row(np.arange(len(grid))),
        "x": background_row(xy[:, 0]),
        "y": background_row(xy[:, 1]),
        "tissue_fraction": background_row(grid.tissue_fraction),
    }


def background_row(values: np.ndarray) -> Any:
    """(N,) per-tile values -> (N + 1,) ``features`` column whose row 0 (label 0, background) napari's status
    bar leaves out.

    napari prints a numpy float with 3 significant digits (x 3136 as "3.14e+03"), an integer sentinel or a
    float32 NaN as itself ("tile: -1", "pc1: nan") and pandas' nullable ``Int64`` missing value as "<NA>"; it
    skips None and float NaN. So floats become float64 with NaN in row 0, and integers a pandas categorical of
    their int64 values with row 0 missing: each value is shown exactly and glass names nothing, in the codes
    (int8-int32) and the distinct values, 1-12 bytes a row where object columns of Python ints cost ~36 (about
    10 MB per column at 100k tiles, kept while the layer lives).
    """
    values = np.asarray(values)
    if np.issubdtype(values.dtype, np.integer):
        import pandas as pd  # napari's own dependency; only layer building needs it

        uniq, codes = np.unique(values.astype(np.int64, copy=False), return_inverse=True)
        return pd.Categorical.from_codes(np.r_[-1, codes.ravel()], categories=pd.Index(uniq))
    return np.r_[np.nan, values.astype(np.float64)]


@dataclass
class TissueGridResult:
    """Tissue mask and tile grid of one slide, with napari placement.

    Attributes:
        path: the slide.
        mask: the tissue mask (on a thumbnail).
        grid: kept tiles.
        slide_mpp: level-0 (um/px y, um/px x) of the slide (its file's, or the fallback), None without.
        mask_scale: napari scale (sy, sx) of the mask in slide-layer units.
        mask_translate: napari translate (ty, tx) of the mask in slide-layer units.
        rectangles: (N, 4, 2) tile outlines (y, x) in slide-layer units.
        tile_raster: :class:`TileRaster` of the kept tiles (what the widget shows).
    """

    path: Path
    mask: TissueMask
    grid: TileGrid
    slide_mpp: tuple[float, float] | None
    mask_scale: tuple[float, float]
    mask_translate: tuple[float, float]
    rectangles: np.ndarray
    tile_raster: TileRaster

    @property
    def units(self) -> tuple[str, str]:
        """Units of the slide layer: ("um", "um") with MPP, else ("pixel", "pixel")."""
        return ("um", "um") if self.slide_mpp else ("pixel", "pixel")


def mask_placement(
    mask_shape: tuple[int, int], slide_shape: tuple[int, int], mpp: tuple[float, float] | None
) -> tuple[tuple[float, float], tuple[float, float]]:
    """napari (scale, translate) of a low-resolution mask covering the whole slide.

    Mask pixel j spans level-0 pixels [j * ds, (j + 1) * ds); its centre is (j + 0.5) * ds - 0.5 in napari's
    pixel-centre convention, times um/px.
    """
    unit = mpp or (1.0, 1.0)
    ds = (slide_shape[0] / mask_shape[0], slide_shape[1] / mask_shape[1])
    scale = (ds[0] * unit[0], ds[1] * unit[1])
    translate = ((ds[0] / 2 - 0.5) * unit[0], (ds[1] / 2 - 0.5) * unit[1])
    return scale, translate


@dataclass
class TissuePreview:
    """Tissue evidence of one slide, to preview thresholds without re-reading it (the tissue widget).

    Attributes:
        path: the slide.
        maps: ``wsi.tiling.TissueMaps`` of the thumbnail.
        downsample: level-0 px per thumbnail px.
        slide_shape: level-0 (h, w).
        slide_mpp: level-0 (um/px y, x) or None.
        mask_scale, mask_translate: napari placement of a mask on the thumbnail grid (slide-layer units).
    """

    path: Path
    maps: TissueMaps
    downsample: float
    slide_shape: tuple[int, int]
    slide_mpp: tuple[float, float] | None
    mask_scale: tuple[float, float]
    mask_translate: tuple[float, float]

    def mask(self, threshold: float = TISSUE_THRESHOLD) -> TissueMask:
        """The tissue mask at ``threshold`` (optical density, see ``wsi.tiling.mask_from_maps``)."""
        return TissueMask(mask_from_maps(self.maps, threshold=threshold), self.downsample)


def tissue_preview_steps(
    path: str | Path,
    *,
    fallback_mpp: float | None = None,
    max_size: int = 2048,
    cancel: threading.Event | None = None,
) -> Generator[Progress | TissuePreview, None, None]:
    """Thumbnail and tissue maps of a slide; yields Progress, then a :class:`TissuePreview`."""
    yield Progress(0, 1, "tissue maps")
    stop = partial(raise_if_cancelled, cancel, "Tissue preview cancelled.")
    with open_pyramid(path, fallback_mpp=fallback_mpp) as pyr:
        # bounded: what detect_tissue works on; Cancel stops its read between blocks
        thumb, ds = detection_thumbnail(pyr, max_size, stop)
        maps = tissue_maps(thumb, tissue_smooth_px(pyr, ds))
        shape, slide_mpp = pyr.levels[0].shape, pyr.mpp
    stop()
    scale, translate = mask_placement(maps.density.shape, shape, slide_mpp)
    yield Progress(1, 1, "done")
    yield TissuePreview(Path(path), maps, ds, shape, slide_mpp, scale, translate)


def tissue_grid_steps(
    path: str | Path,
    *,
    tile_px: int = 224,
    mpp: float = 0.5,
    min_tissue: float = 0.5,
    threshold: float = TISSUE_THRESHOLD,
    fallback_mpp: float | None = None,
    max_size: int = 2048,
    cancel: threading.Event | None = None,
) -> Generator[Progress | TissueGridResult, None, None]:
    """Detect tissue and build the tile grid; yields Progress, then the TissueGridResult.

    ``threshold`` is the tissue detector's optical-density threshold (``wsi.tiling.mask_from_maps``);
    ``fallback_mpp`` the level-0 um/px of a slide whose file states none (see ``open_pyramid``).

    Raises:
        WSIError: the slide cannot be read.
        Cancelled: ``cancel`` was set.
    """
    yield Progress(0, 2, "tissue detection")
    with open_pyramid(path, fallback_mpp=fallback_mpp) as pyr:
        square_pixel_mpp(pyr)  # non-square pixels are refused before the detection, not after
        stop = partial(raise_if_cancelled, cancel, "Tissue detection cancelled.")
        mask = detect_tissue(pyr, max_size=max_size, threshold=threshold, check=stop)
        stop()
        yield Progress(1, 2, "tile grid")
        grid = make_tile_grid(pyr, tile_px=tile_px, mpp=mpp, min_tissue=min_tissue, mask=mask)
        slide_mpp = pyr.mpp
    scale, translate = mask_placement(mask.mask.shape, grid.slide_shape, slide_mpp)
    yield Progress(2, 2, "done")
    raster = tile_id_raster(grid)
    yield TissueGridResult(Path(path), mask, grid, slide_mpp, scale, translate, grid_to_shapes(grid), raster)


def tissue_grid(path: str | Path, **kw: object) -> TissueGridResult:
    """Run :func:`tissue_grid_steps` to the end and return its result (for scripts and the CLI)."""
    result = drain(tissue_grid_steps(path, **kw))  # type: ignore[arg-type]
    assert isinstance(result, TissueGridResult)
    return result
