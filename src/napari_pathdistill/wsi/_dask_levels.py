"""The dask view of one pyramid level: one chunk per native tile, served from a shared LRU cache of decoded
tiles; a tile that cannot be decoded is a flat grey block, reported once (napari shows the warning)."""

from __future__ import annotations

import threading
import warnings

import numpy as np

from napari_pathdistill.errors import CorruptTileError, CorruptTileWarning
from napari_pathdistill.wsi._backend import Backend as _Backend
from napari_pathdistill.wsi._backend_utils import BlockCache
from napari_pathdistill.wsi._blocks import CORRUPT_GREY
from napari_pathdistill.wsi.levels import PyramidLevel


class LevelArray:
    """Array-like view of one level for ``dask.array.from_array``.

    dask fuses slicing into the getter, so a request may be any window inside one chunk; it is always served
    from the whole (cached) native tile that contains it, so every read of a pixel gives the same value
    whatever the slicing (this matters at OpenSlide levels > 0, which resample non-integer offsets).
    """

    dtype = np.dtype(np.uint8)
    ndim = 3

    def __init__(self, backend: _Backend, level: int, lv: PyramidLevel, cache: BlockCache) -> None:
        self._backend, self._level, self._cache = backend, level, cache
        self.shape = (*lv.shape, 3)
        self._tile = lv.tile_shape
        self._warned: set[tuple[int, int]] = set()  # corrupt tiles already reported
        self._warned_lock = threading.Lock()

    def _tile_block(self, ty: int, tx: int) -> np.ndarray:
        key = (self._level, ty, tx)
        block = self._cache.get(key)
        if block is None:
            (th, tw), (h, w) = self._tile, self.shape[:2]
            y0, x0 = ty * th, tx * tw
            size = (min(th, h - y0), min(tw, w - x0))
            try:
                block = self._backend.read_level(self._level, x0, y0, size[1], size[0])
            except CorruptTileError as exc:
                block = np.full((*size, 3), CORRUPT_GREY, np.uint8)
                self._warn_once(ty, tx, exc)
            self._cache.put(key, block)
        return block

    def _warn_once(self, ty: int, tx: int, exc: CorruptTileError) -> None:
        """One :class:`CorruptTileWarning` per tile (napari shows it as a notification)."""
        with self._warned_lock:
            if (ty, tx) in self._warned:
                return
            self._warned.add((ty, tx))
        th, tw = self._tile
        warnings.warn(
            f"{exc} Shown as a flat grey tile: level {self._level}, tile row {ty} column {tx} (level px x="
            f"{tx * tw}, y={ty * th}).", CorruptTileWarning, stacklevel=2,
        )  # fmt: skip

    def __getitem__(self, key: tuple[slice, ...]) -> np.ndarray:
        (y0, y1, _), (x0, x1, _) = key[0].indices(self.shape[0]), key[1].indices(self.shape[1])
        th, tw = self._tile
        if y1 <= y0 or x1 <= x0:
            return np.empty((max(0, y1 - y0), max(0, x1 - x0), 3), np.uint8)
        ty, tx = y0 // th, x0 // tw
        if (y1 - 1) // th == ty and (x1 - 1) // tw == tx:  # inside one tile: the usual dask request
            out = self._tile_block(ty, tx)[y0 - ty * th : y1 - ty * th, x0 - tx * tw : x1 - tx * tw]
        else:  # spans tiles (direct use): stitch them
            out = np.concatenate([
                np.concatenate([self._tile_block(r, c) for c in range(tx, (x1 - 1) // tw + 1)], axis=1)
                for r in range(ty, (y1 - 1) // th + 1)
            ], axis=0)[y0 - ty * th : y1 - ty * th, x0 - tx * tw : x1 - tx * tw]  # fmt: skip
        return out[(slice(None), slice(None), *key[2:])] if len(key) > 2 else out


def chunk_sizes(n: int, tile: int) -> tuple[int, ...]:
    full, rest = divmod(n, tile)
    return (tile,) * full + ((rest,) if rest else ())
