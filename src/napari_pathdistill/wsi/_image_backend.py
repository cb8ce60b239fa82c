"""Plain-image backend: a small JPEG/PNG (e.g. the 5 % scale BIRL/ANHIR registration images) as a 1-level slide.

The image is decoded once into memory (it must be small: at most ``MAX_PIXELS``), composited on white if it has
alpha, and served in 512 px chunks. Such files carry no microscope pixel size, so ``mpp`` is None unless the
caller supplies one (``open_pyramid(path, fallback_mpp=...)``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from napari_pathdistill.errors import WSIError
from napari_pathdistill.wsi._backend_utils import to_rgb
from napari_pathdistill.wsi.levels import PyramidLevel
from napari_pathdistill.wsi.pil_rgb import grey16

SUFFIXES = (".jpg", ".jpeg", ".png")
#: larger plain images would be decoded whole: convert them to a pyramidal (OME-)TIFF instead
MAX_PIXELS = 20_000 * 20_000
CHUNK = 512


class ImageBackend:
    """A JPEG/PNG decoded with Pillow into one in-memory RGB level."""

    name = "pillow"

    def __init__(self, path: Path) -> None:
        from PIL import Image

        try:
            with Image.open(path) as im:
                if im.width * im.height > MAX_PIXELS:
                    raise WSIError(
                        f"{path.name} is a {im.width} x {im.height} plain image: too large to decode whole. "
                        "Convert it to a pyramidal OME-TIFF (e.g. `vips tiffsave in.jpg out.ome.tif --tile "
                        "--pyramid`) and open that."
                    )
                im.load()
                if im.mode.startswith("I"):  # 16-bit grey: Pillow's convert("RGB") clips every value over 255
                    arr = grey16(np.asarray(im))
                else:
                    arr = np.asarray(im.convert("RGBA") if "A" in im.getbands() else im.convert("RGB"))
        except WSIError:
            raise
        except Exception as exc:  # truncated / corrupt / not an image
            raise WSIError(f"{path.name} could not be decoded as an image ({exc}).") from exc
        self._rgb = to_rgb(arr)
        h, w = self._rgb.shape[:2]
        self.levels = [PyramidLevel((h, w), 1.0, (min(CHUNK, h), min(CHUNK, w)))]
        self.mpp: tuple[float, float] | None = None
        self.properties: dict[str, str] = {"pathdistill.backend": "pillow"}

    def read_level(self, level: int, x: int, y: int, w: int, h: int) -> np.ndarray:
        """(h, w, 3) uint8 window at level pixels (x, y); outside the image is white."""
        out = np.full((h, w, 3), 255, np.uint8)
        ih, iw = self._rgb.shape[:2]
        x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + w, iw), min(y + h, ih)
        if x1 > x0 and y1 > y0:
            out[y0 - y : y1 - y, x0 - x : x1 - x] = self._rgb[y0:y1, x0:x1]
        return out

    def read_region(self, location: tuple[int, int], level: int, size: tuple[int, int]) -> np.ndarray:
        """OpenSlide-style read: ``location`` (x, y) in level-0 px, ``size`` (w, h) in level px."""
        return self.read_level(level, location[0], location[1], size[0], size[1])

    def associated_image_names(self) -> list[str]:
        return []

    def read_associated(self, name: str) -> np.ndarray:
        raise WSIError(f"No associated image {name!r}: plain images have none.")

    def close(self) -> None:
        self._rgb = np.zeros((0, 0, 3), np.uint8)
