"""Whole-slide image core: lazy pyramids (OpenSlide / tifffile), tissue detection and tile grids.

Pure numpy/dask/scikit-image; never imports Qt or napari.
"""

from napari_pathdistill.wsi.pyramid import Pyramid, PyramidLevel, open_pyramid
from napari_pathdistill.wsi.tiling import (
    TileGrid,
    TissueMask,
    detect_tissue,
    grid_to_image,
    grid_to_shapes,
    make_tile_grid,
    read_tiles,
    tissue_mask_from_rgb,
)

__all__ = [
    "Pyramid",
    "PyramidLevel",
    "TileGrid",
    "TissueMask",
    "detect_tissue",
    "grid_to_image",
    "grid_to_shapes",
    "make_tile_grid",
    "open_pyramid",
    "read_tiles",
    "tissue_mask_from_rgb",
]
