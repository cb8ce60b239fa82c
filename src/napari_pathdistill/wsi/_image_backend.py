"""Plain-image backend: a small JPEG/PNG (e.g. the 5 % scale BIRL/ANHIR registration images) as a 1-level slide.

The image is decoded once into memory (it must be small: at most ``MAX_PIXELS``) by the project's one tile-image
rule, :func:`~napari_pathdistill.wsi.pil_rgb.pil_rgb` (alpha and transparent palette entries composited on white,
16-bit grey stretched from its bit depth's white), so a file is the same pixels here (napari's widgets,
``pathdistill tiles`` / ``embed``) as in the trainer's tile folders and the linear probe; and served in 512 px
chunks. The EXIF Orientation tag is not applied, as napari's own reader (imageio) does not apply it: the widgets
place their results on that layer in its pixels, so the image is used as stored. Such files carry no microscope
pixel size, so ``mpp`` is None unless the caller supplies one (``open_pyramid(path, fallback_mpp=...)``).

Pillow's decompression-bomb guard (``Image.MAX_IMAGE_PIXELS``: a warning over 89 M px, an error over 179 M) is
off while a file is opened here: ``MAX_PIXELS`` is this backend's limit, checked before anything is decoded, and
Pillow's refused a 15,000 x 15,000 JPEG as a possible "decompression bomb DOS attack".
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from napari_pathdistill.errors import WSIError
from napari_pathdistill.wsi.levels import PyramidLevel
from napari_pathdistill.wsi.pil_rgb import pil_rgb

SUFFIXES = (".jpg", ".jpeg", ".png")
#: larger plain images would be decoded whole: convert them to a pyramidal (OME-)TIFF instead
MAX_PIXELS = 20_000 * 20_000
CHUNK = 512
_PIL_LIMIT = threading.Lock()


@contextmanager
def _without_pillow_bomb_limit() -> Iterator[None]:
    """Pillow's ``MAX_IMAGE_PIXELS`` off for the block (it is a module global: restored after, under a lock)."""
    from PIL import Image

    with _PIL_LIMIT:
        saved, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
        try:
            yield
        finally:
            Image.MAX_IMAGE_PIXELS = saved


class ImageBackend:
    """A JPEG/PNG decoded with Pillow into one in-memory RGB level."""

    name = "pillow"

    def __init__(self, path: Path) -> None:
        from PIL import Image

        try:
            with _without_pillow_bomb_limit():  # only the header is read here; decoding follows
                opened = Image.open(path)
            with opened as im:
                if im.width * im.height > MAX_PIXELS:
                    raise WSIError(
                        f"{path.name} is a {im.width} x {im.height} plain image: too large to decode whole. "
                        "Convert it to a pyramidal OME-TIFF (e.g. `vips tiffsave in.jpg out.ome.tif --tile "
                        "--pyramid`) and open that."
                    )
                rgb = pil_rgb(im)
        except WSIError:
            raise
        except Exception as exc:  # truncated / corrupt / not an image
            raise WSIError(f"{path.name} could not be decoded as an image ({exc}).") from exc
        self._rgb = np.ascontiguousarray(rgb)
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
