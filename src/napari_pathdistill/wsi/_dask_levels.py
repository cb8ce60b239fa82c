"""The dask view of one pyramid level: one chunk per native tile, served from a shared LRU cache of decoded
tiles; a tile that cannot be decoded is a flat grey block, reported once (napari shows the warning), up to
:data:`MAX_TILE_WARNINGS` tiles per slide, then one note for the rest."""

from __future__ import annotations

import threading
import warnings

import numpy as np

from napari_pathdistill.errors import CorruptTileError, CorruptTileWarning
from napari_pathdistill.wsi._backend import Backend as _Backend
from napari_pathdistill.wsi._backend_utils import BlockCache
from napari_pathdistill.wsi._blocks import CORRUPT_GREY
from napari_pathdistill.wsi.levels import PyramidLevel

#: corrupt tiles of one slide reported one by one (a notification each in napari); past these, one note says that
#: more are grey without a word: a truncated DICOM of CMU-1-Small-Region gave 65 notifications at full zoom,
#: a truncated slide of 100k tiles would give one per tile panned over
MAX_TILE_WARNINGS = 5


class TileWarnings:
    """The corrupt-tile warnings of one slide, shared by its levels: each tile once, the first
    :data:`MAX_TILE_WARNINGS` tiles by name, then one note that more are shown grey without a warning."""

    def __init__(self, limit: int = MAX_TILE_WARNINGS) -> None:
        self.limit = limit
        self._seen: set[tuple[int, int, int]] = set()
        self._lock = threading.Lock()

    def warn(self, level: int, ty: int, tx: int, exc: CorruptTileError, tile: tuple[int, int]) -> None:
        """Report tile (``ty``, ``tx``) of ``level`` (its shape ``tile``) that raised ``exc``, unless it was, or
        the slide's quota of warnings is spent."""
        with self._lock:
            if (level, ty, tx) in self._seen:
                return
            self._seen.add((level, ty, tx))
            n = len(self._seen)
        th, tw = tile
        if n <= self.limit:
            message = (f"{exc} Shown as a flat grey tile: level {level}, tile row {ty} column {tx} (level px x="
                       f"{tx * tw}, y={ty * th}).")  # fmt: skip
        elif n == self.limit + 1:
            message = (f"{exc} More than {self.limit} tiles of this slide cannot be decoded: this one and any "
                       "further are shown as flat grey tiles without a warning each. The file is corrupt or "
                       "truncated; copy it again.")  # fmt: skip
        else:
            return
        warnings.warn(message, CorruptTileWarning, stacklevel=3)


class LevelArray:
    """Array-like view of one level for ``dask.array.from_array``.

    dask fuses slicing into the getter, so a request may be any window inside one chunk; it is always served
    from the whole (cached) native tile that contains it, so every read of a pixel gives the same value
    whatever the slicing (this matters at OpenSlide levels > 0, which resample non-integer offsets).
    """

    dtype = np.dtype(np.uint8)
    ndim = 3

    def __init__(
        self,
        backend: _Backend,
        level: int,
        lv: PyramidLevel,
        cache: BlockCache,
        notes: TileWarnings | None = None,
    ) -> None:
        self._backend, self._level, self._cache = backend, level, cache
        self.shape = (*lv.shape, 3)
        self._tile = lv.tile_shape
        self._notes = notes if notes is not None else TileWarnings()  # the slide's, shared by its levels

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
                self._notes.warn(self._level, ty, tx, exc, self._tile)
            self._cache.put(key, block)
        return block

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
