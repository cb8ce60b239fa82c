"""What ``Pyramid`` needs from a backend (OpenSlide, tifffile, DICOM, fastslide, plain image)."""

from __future__ import annotations

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
