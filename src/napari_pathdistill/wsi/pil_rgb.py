"""One plain image file (a tile PNG / TIFF / JPEG) as the (H, W, 3) uint8 RGB every part of the tool sees.

Three readers decode single images with Pillow: the plain-image slide backend (napari, ``pathdistill embed``),
the trainer's tile folders and the linear probe's labelled tiles. They share these rules so a tile is the same
pixels wherever it is read:

- alpha (RGBA, LA, PA, transparent palette entries, and a grey / RGB PNG's transparent colour, its tRNS colour
  key, which image viewers show as transparent) is composited on white, the slide background;
- 16-bit grey (Pillow modes ``I;16*``; Pillow before 10 opened a 16-bit grey PNG as ``I``) is stretched from
  its bit depth's white (:func:`~napari_pathdistill.wsi._sample_range.bit_depth_white`: a 12-bit camera's 4095,
  else 65535) to 8 bits, as the tifffile backend does for 12-bit slides: Pillow's ``convert("RGB")`` clips
  every value over 255, which turned such a tile into a white square, silently;
- a 32-bit integer or float image (``I``, ``F``) has no fixed range: refused.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from napari_pathdistill.wsi._backend_utils import to_rgb
from napari_pathdistill.wsi._sample_range import bit_depth_white, stretch


def grey16(grey: np.ndarray) -> np.ndarray:
    """A 16-bit grey image (H, W) as uint16 stretched from its bit depth's white to 65535."""
    arr = np.clip(grey, 0, 65535).astype(np.uint16)
    white = bit_depth_white(int(arr.max(initial=0)), arr.dtype)
    return stretch(arr, white) if white < 65535 else arr


def is_grey16(img: Any) -> bool:
    """Whether a PIL image is 16-bit grey (``I`` only for a PNG: PNG has no 32-bit grey)."""
    return str(img.mode).startswith("I;16") or (img.mode == "I" and img.format == "PNG")


def pil_rgb(img: Any) -> np.ndarray:
    """A PIL image as (H, W, 3) uint8 RGB, by the rules of this module.

    Raises:
        ValueError: a 32-bit integer or floating-point image.
    """
    if is_grey16(img):
        return to_rgb(grey16(np.asarray(img)))
    if img.mode in ("I", "F"):
        raise ValueError(
            f"a {'32-bit integer' if img.mode == 'I' else 'floating-point'} image (mode {img.mode}) has no fixed "
            "range to map to 8-bit RGB: convert it to 8-bit RGB"
        )
    if "A" in img.getbands() or img.mode in ("P", "PA") or "transparency" in img.info:
        return to_rgb(np.asarray(img.convert("RGBA")))
    return _rgb_strips(img if img.mode == "RGB" else img.convert("RGB"))


#: bytes of the strips :func:`_rgb_strips` copies at a time
STRIP_BYTES = 1 << 24


def _rgb_strips(img: Any) -> np.ndarray:
    """An RGB PIL image as (H, W, 3) uint8, copied strip by strip into one array.

    ``np.asarray(img)`` goes through ``img.tobytes()``, which holds the encoded chunks and their joined copy at
    once: with Pillow's own 4 bytes a pixel, a plain JPEG of N px peaked at ~14 N bytes (4.6x its RGB), 8,000 x
    8,000 px: +880 MB; strips of ``STRIP_BYTES`` leave the decoded image and the result (~7 N).
    """
    img.load()
    w, h = img.size
    out = np.empty((h, w, 3), np.uint8)
    step = max(1, STRIP_BYTES // max(1, 3 * w))
    for y in range(0, h, step):
        out[y : y + step] = np.asarray(img.crop((0, y, w, min(h, y + step))))
    return out
