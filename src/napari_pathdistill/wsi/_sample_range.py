"""The value of white of a TIFF stored in more than 8 bits: 12-bit data in 16-bit samples must not show black.

Scanners and cameras that digitise 10, 12 or 14 bits store them in 16-bit samples (BitsPerSample 16). Scaled by
the dtype's maximum (65535), 12-bit white (4095) becomes grey level 16 of 255: the slide shows nearly black, and
tissue detection and the models see it so. The tifffile backend therefore stretches each decoded tile from
``[0, white]`` to the dtype's range before converting to 8 bits, with ``white`` taken from, in order:

1. the TIFF tags SMaxSampleValue (341) or MaxSampleValue (281) when below the dtype's maximum;
2. the OME-XML ``Pixels SignificantBits`` (Bio-Formats, QuPath and tifffile write it) when below the dtype's bits;
3. else an estimate: the largest value in up to :data:`MAX_SAMPLED` tiles of the coarsest level, rounded up to
   the next bit depth (``2**k - 1``, k >= 8), so a 12-bit slide gets 4095 and a true 16-bit one 65535.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import numpy as np

#: tiles of the coarsest level decoded to estimate a slide's bit depth (evenly spread over the level)
MAX_SAMPLED = 64
#: pixels decoded for that estimate at most: fewer tiles when they are large (strips of a flat TIFF), none when
#: one alone is larger (a single-strip image: then no estimate, white stays the dtype's maximum)
MAX_SAMPLED_PIXELS = 2**24


def stated_white(page: Any, ome_xml: str | None) -> tuple[int, str] | None:
    """(white, where it was read) from ``page``'s tags or the OME-XML, None when neither states a smaller range."""
    top = int(np.iinfo(page.dtype).max)
    for code, name in ((341, "SMaxSampleValue"), (281, "MaxSampleValue")):
        tag = page.tags.get(code)
        if tag is None:
            continue
        values = tag.value if isinstance(tag.value, tuple | list) else (tag.value,)
        try:
            white = int(max(float(v) for v in values))
        except (TypeError, ValueError):
            continue
        if 0 < white < top:
            return white, name
    m = re.search(r"<(?:\w+:)?Pixels\b[^>]*?\bSignificantBits=\"(\d+)\"", ome_xml or "")
    if m and 8 <= int(m.group(1)) < 8 * page.dtype.itemsize:
        return 2 ** int(m.group(1)) - 1, f"OME SignificantBits {m.group(1)}"
    return None


def estimated_white(
    n_tiles: int, tile_pixels: int, decode: Callable[[int], np.ndarray | None], dtype: np.dtype
) -> int | None:
    """The next ``2**k - 1`` (k >= 8) at or above the largest value of up to MAX_SAMPLED of ``n_tiles`` tiles
    (fewer when they hold more than MAX_SAMPLED_PIXELS together).

    Args:
        n_tiles: tiles (segments) of the level sampled.
        tile_pixels: pixels of one tile.
        decode: tile index -> its decoded samples in the file's dtype, None for a sparse tile.
        dtype: the samples' integer dtype.

    Returns:
        The white value, None when every sampled tile is sparse or one tile is over MAX_SAMPLED_PIXELS.
    """
    most = min(MAX_SAMPLED, MAX_SAMPLED_PIXELS // max(1, tile_pixels))
    if most == 0:
        return None
    step = max(1, n_tiles // most)
    peak = -1
    for i in range(0, n_tiles, step)[:most]:
        tile = decode(i)
        if tile is not None and tile.size:
            peak = max(peak, int(tile.max()))
    return None if peak < 0 else bit_depth_white(peak, dtype)


def bit_depth_white(peak: int, dtype: np.dtype) -> int:
    """The smallest ``2**k - 1`` (k >= 8) at or above ``peak``, at most ``dtype``'s maximum."""
    bits = max(8, int(peak).bit_length())
    return min(2**bits - 1, int(np.iinfo(dtype).max))


def stretch(block: np.ndarray, white: int) -> np.ndarray:
    """``block`` of an integer dtype scaled from [0, ``white``] to the dtype's full range (above white clipped)."""
    top = int(np.iinfo(block.dtype).max)
    scaled = np.rint(block.astype(np.float64) * (top / white))
    return np.minimum(scaled, top).astype(block.dtype)
