"""What ``Pyramid`` needs from a backend (OpenSlide, tifffile, DICOM, fastslide, plain image)."""

from __future__ import annotations

import math
from typing import Protocol

import numpy as np

from napari_pathdistill.wsi.levels import PyramidLevel


class Backend(Protocol):
    """A slide reader: level geometry, MPP (y, x) um/px or None, properties and thread-safe RGB reads."""

    name: str
    levels: list[PyramidLevel]
    mpp: tuple[float, float] | None
    properties: dict[str, str]

    def read_region(self, location: tuple[int, int], level: int, size: tuple[int, int]) -> np.ndarray: ...
    def read_level(self, level: int, x: int, y: int, w: int, h: int) -> np.ndarray: ...
    def associated_image_names(self) -> list[str]: ...
    def read_associated(self, name: str) -> np.ndarray: ...
    def close(self) -> None: ...


#: um/px above which a file's pixel size is no microscope's (2.5x objectives scan at ~4 um/px; 72 and 96 dpi,
#: the defaults of image editors, are 352.8 and 264.6 um/px) and is ignored
MAX_MPP = 50.0


def microscope_mpp(mpp: tuple[float, float] | None) -> tuple[float, float] | None:
    """A backend's (y, x) um/px, or None when it states none or one no slide scanner makes (<= 0, not finite,
    or over :data:`MAX_MPP`)."""
    if mpp is None:
        return None
    ok = all(math.isfinite(v) and 0 < v <= MAX_MPP for v in mpp)
    return (float(mpp[0]), float(mpp[1])) if ok else None
