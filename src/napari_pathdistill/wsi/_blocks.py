"""Block-wise reading of a whole level in bounded memory: the reduced (thumbnail) image of a level, and the
refusal of chunks (e.g. the one strip of a single-strip TIFF) too large to decode at once.

A level is read in blocks of a few megapixels aligned to its native tiles (or strips), each block is
box-averaged by a power-of-two factor (PIL ``reduce``) and pasted into the small output, so peak memory is
about the output plus one block, whatever the level's size.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np

from napari_pathdistill.errors import CorruptTileError, WSIError
from napari_pathdistill.wsi.levels import PyramidLevel

#: largest decoded chunk (tile or strip, RGB) read at once; a larger one is refused
MAX_CHUNK_BYTES = 256 * 2**20
#: pixels of one block read while reducing a level
BLOCK_PIXELS = 1 << 22
#: grey level of a tile that cannot be decoded
CORRUPT_GREY = 128

ReadLevel = Callable[[int, int, int, int, int], np.ndarray]


def check_chunk_size(path: str | Path, lv: PyramidLevel) -> None:
    """Refuse a level whose native chunk (tile or strip) alone would decode to more than MAX_CHUNK_BYTES.

    Raises:
        WSIError: the chunk is too large (e.g. a single-strip TIFF of several GB).
    """
    (th, tw), (h, w) = lv.tile_shape, lv.shape
    nbytes = min(th, h) * min(tw, w) * 3
    if nbytes > MAX_CHUNK_BYTES:
        raise WSIError(
            f"{Path(path).name} is a {w}x{h} image stored in blocks (strips or tiles) of {min(tw, w)}x{min(th, h)} "
            f"px, {nbytes / 2**30:.1f} GiB each once decoded: every read would have to decode one whole. Convert "
            "it to a pyramidal TIFF first, e.g. `vips tiffsave in.tif out.tif --tile --pyramid --compression jpeg`."
        )


def reduction_factor(level_shape: tuple[int, int], out_shape: tuple[int, int]) -> int:
    """The largest power of two k with level_shape / k >= out_shape on both axes (1 if none)."""
    ratio = min(level_shape[0] / out_shape[0], level_shape[1] / out_shape[1])
    return 1 << max(0, math.floor(math.log2(max(ratio, 1.0))))


def _block_shape(lv: PyramidLevel, k: int) -> tuple[int, int]:
    """(bh, bw) of the read blocks: multiples of k (but at the image edge) and, where cheap, of the tiles."""
    (th, tw), (h, w) = lv.tile_shape, lv.shape

    def unit(t: int) -> int:
        t = min(t, max(h, w))
        lcm = math.lcm(t, k)
        return lcm if lcm <= 4 * max(t, k) else k * -(-t // k)

    bh, bw = unit(th), unit(tw)
    if bw >= w:
        bw = w
        bh *= max(1, BLOCK_PIXELS // (bh * w))  # strips (or narrow images): several row bands at once
    else:
        bw = min(w, bw * max(1, BLOCK_PIXELS // (bh * bw)))
    return min(bh, max(h, 1)), bw


def _read_block(
    read: ReadLevel, level: int, lv: PyramidLevel, box: tuple[int, int, int, int]
) -> tuple[np.ndarray, int]:
    """Block (x, y, w, h) of ``level``; tiles that cannot be decoded come back grey. Returns (block, their count)."""
    x, y, w, h = box
    try:
        return read(level, x, y, w, h), 0
    except CorruptTileError:
        pass
    th, tw = lv.tile_shape
    out, bad = np.full((h, w, 3), CORRUPT_GREY, np.uint8), 0
    for ty in range(y // th * th, y + h, th):
        for tx in range(x // tw * tw, x + w, tw):
            y0, y1, x0, x1 = max(ty, y), min(ty + th, y + h), max(tx, x), min(tx + tw, x + w)
            try:
                out[y0 - y : y1 - y, x0 - x : x1 - x] = read(level, x0, y0, x1 - x0, y1 - y0)
            except CorruptTileError:
                bad += 1
    return out, bad


def reduced_level(
    read: ReadLevel,
    level: int,
    lv: PyramidLevel,
    k: int,
    check: Callable[[], None] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[np.ndarray, int]:
    """Level ``level`` box-averaged by ``k`` (a power of two), read block by block.

    Args:
        read: ``backend.read_level(level, x, y, w, h)`` -> (h, w, 3) uint8.
        level: level index.
        lv: its geometry.
        k: the reduction factor; pixel (i, j) of the result is the mean of the k x k level pixels from
            (k i, k j) (fewer at the right and bottom edges).
        check: called before each block; raises to stop the read (e.g. ``errors.Cancelled`` on Cancel).
        progress: called after each block with (blocks read, blocks in all).

    Returns:
        ((ceil(h / k), ceil(w / k), 3) uint8, number of tiles that could not be decoded (grey there)).
    """
    from PIL import Image

    h, w = lv.shape
    out = np.empty((-(-h // k), -(-w // k), 3), np.uint8)
    bh, bw = _block_shape(lv, k)
    bad, done, total = 0, 0, -(-h // bh) * -(-w // bw)
    for y in range(0, h, bh):
        for x in range(0, w, bw):
            if check is not None:
                check()
            block, n_bad = _read_block(read, level, lv, (x, y, min(bw, w - x), min(bh, h - y)))
            bad += n_bad
            small = np.asarray(Image.fromarray(block).reduce(k)) if k > 1 else block
            out[y // k : y // k + small.shape[0], x // k : x // k + small.shape[1]] = small
            done += 1
            if progress is not None:
                progress(done, total)
    return out, bad
