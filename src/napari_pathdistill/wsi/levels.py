"""The level record of a slide pyramid: pixel shape, true float downsample, native tile shape."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PyramidLevel:
    """One resolution level of a slide.

    Attributes:
        shape: (height, width) in pixels of this level.
        downsample: true float downsample with respect to level 0 (e.g. 4.000326).
        tile_shape: (tile_h, tile_w) native tile size, used as the dask chunk size.
    """

    shape: tuple[int, int]
    downsample: float
    tile_shape: tuple[int, int]
