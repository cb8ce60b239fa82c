"""Whole-slide image core: lazy pyramids (OpenSlide / tifffile), tissue detection and tile grids.

Pure numpy/dask/scikit-image; never imports Qt or napari.
"""

from napari_pathdistill.wsi.pyramid import Pyramid, PyramidLevel, open_pyramid

__all__ = ["Pyramid", "PyramidLevel", "open_pyramid"]
