"""Shared by the WSI backends: conversion of decoded pixels to RGB uint8, the decoded-block LRU cache, tile-file
descriptors closed with their owner, and the files of a folder that may be DICOM instances."""

from __future__ import annotations

import os
import weakref
from collections.abc import Callable
from pathlib import Path

import numpy as np

#: files of a folder examined when asking whether it holds a DICOM series: a series has a few to a few hundred
#: instances, while napari asks about every folder dropped on it (100,000 tiles must not be opened one by one)
MAX_FOLDER_SCAN = 256
#: suffixes of files that are no DICOM instance (image tiles, tables, other slides), never opened in that scan
NOT_DICOM_SUFFIXES = frozenset({
    ".png", ".jpg", ".jpeg", ".gif", ".bmp", ".webp", ".tif", ".tiff", ".svs", ".ndpi", ".h5", ".hdf5", ".npy",
    ".npz", ".csv", ".tsv", ".json", ".txt", ".md", ".xml", ".geojson", ".pt", ".pth", ".safetensors", ".zip", ".gz",
})  # fmt: skip


def dicom_candidates(folder: Path, limit: int | None = MAX_FOLDER_SCAN) -> list[Path]:
    """The files of ``folder`` (the first ``limit``; None: all), in name order, that may be DICOM instances."""
    out: list[Path] = []
    for f in sorted(folder.iterdir()):
        if f.suffix.lower() not in NOT_DICOM_SUFFIXES and f.is_file():
            out.append(f)
            if len(out) == limit:
                break
    return out


def open_fd(owner: object, path: str | Path) -> tuple[int, Callable[[], None]]:
    """A read-only descriptor of ``path`` and the callable that closes it (once; later calls do nothing).

    It is also closed when ``owner`` is garbage-collected: napari drops a removed slide layer's dask arrays,
    and with them the backend, without calling ``close()``; a bare descriptor would stay open for the rest of
    the session (one per slide opened).
    """
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
    return fd, weakref.finalize(owner, os.close, fd)


def composite_rgba(rgba: np.ndarray, background: tuple[int, int, int] = (255, 255, 255)) -> np.ndarray:
    """Composite non-premultiplied RGBA over an opaque background colour.

    openslide-python un-premultiplies OpenSlide's ARGB, so ``out = rgb * a + bg * (1 - a)`` (a in [0, 1]),
    rounded to nearest. Where alpha is 255 the result equals ``Image.convert("RGB")`` exactly; where alpha
    is 0 (outside the scanned region) it is the background.

    Args:
        rgba: (h, w, 4) or (h, w, 3) uint8.
        background: RGB background colour.

    Returns:
        (h, w, 3) uint8 RGB, C-contiguous.
    """
    if rgba.ndim != 3 or rgba.shape[2] not in (3, 4):
        raise ValueError(f"expected (h, w, 3|4) image, got shape {rgba.shape}")
    rgb = rgba[..., :3]
    if rgba.shape[2] == 3:
        return np.ascontiguousarray(rgb, dtype=np.uint8)
    alpha = rgba[..., 3:4]
    if alpha.min(initial=255) == 255:
        return np.ascontiguousarray(rgb)
    a = alpha.astype(np.uint32)
    bg = np.asarray(background, dtype=np.uint32)
    out = (rgb.astype(np.uint32) * a + bg * (255 - a) + 127) // 255
    return out.astype(np.uint8)


def to_rgb(arr: np.ndarray, background: tuple[int, int, int] = (255, 255, 255)) -> np.ndarray:
    """Convert a decoded TIFF block (h, w), (h, w, 1|2|3|4) of any integer dtype to (h, w, 3) uint8 RGB."""
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.dtype != np.uint8:
        info = np.iinfo(arr.dtype) if arr.dtype.kind in "ui" else None
        scale = 255.0 / float(info.max) if info is not None else 255.0
        arr = np.clip(np.rint(arr.astype(np.float64) * scale), 0, 255).astype(np.uint8)
    channels = arr.shape[2]
    if channels == 1:
        return np.ascontiguousarray(np.repeat(arr, 3, axis=2))
    if channels == 2:  # grey + alpha
        arr = np.concatenate([np.repeat(arr[..., :1], 3, axis=2), arr[..., 1:2]], axis=2)
    return composite_rgba(arr[..., :4], background)


def paste_tiles(
    out: np.ndarray,
    x: int,
    y: int,
    level_shape: tuple[int, int],
    tile_shape: tuple[int, int],
    read_tile: Callable[[int], np.ndarray | None],
) -> np.ndarray:
    """Fill ``out`` (h, w, ...) with block [y, y+h) x [x, x+w) of a tiled level, one tile decode at a time.

    Args:
        out: the block, pre-filled with the value of the area outside the level and of sparse tiles.
        x: left of the block in level pixels.
        y: top of the block in level pixels.
        level_shape: (h, w) of the level.
        tile_shape: (th, tw) of its tiles (or strips).
        read_tile: row-major tile index -> the decoded tile, or None for a sparse tile (left as pre-filled).

    Returns:
        ``out``.
    """
    h, w = out.shape[:2]
    (lh, lw), (th, tw) = level_shape, tile_shape
    n_across = -(-lw // tw)
    y0, y1, x0, x1 = max(y, 0), min(y + h, lh), max(x, 0), min(x + w, lw)
    for ty in range(y0 // th, -(-y1 // th) if y1 > y0 else 0):
        for tx in range(x0 // tw, -(-x1 // tw) if x1 > x0 else 0):
            tile = read_tile(ty * n_across + tx)
            if tile is None:
                continue
            sy0, sx0 = max(y0, ty * th), max(x0, tx * tw)
            sy1, sx1 = min(y1, (ty + 1) * th), min(x1, (tx + 1) * tw)
            out[sy0 - y : sy1 - y, sx0 - x : sx1 - x] = tile[
                sy0 - ty * th : sy1 - ty * th, sx0 - tx * tw : sx1 - tx * tw
            ]
    return out


class BlockCache:
    """Thread-safe LRU cache of decoded blocks, bounded in bytes (0 disables it).

    napari re-requests the same chunks while panning and zooming, and random tile reads overlap chunks;
    OpenSlide caches compressed-tile decodes but not the RGBA->RGB conversion, tifffile caches nothing.
    """

    def __init__(self, max_bytes: int) -> None:
        import threading
        from collections import OrderedDict

        self.max_bytes = max_bytes
        self._data: OrderedDict[tuple, np.ndarray] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key: tuple) -> np.ndarray | None:
        with self._lock:
            block = self._data.get(key)
            if block is not None:
                self._data.move_to_end(key)
            return block

    def put(self, key: tuple, block: np.ndarray) -> None:
        if block.nbytes > self.max_bytes:
            return
        block.setflags(write=False)
        with self._lock:
            if key in self._data:
                return
            self._data[key] = block
            self._bytes += block.nbytes
            while self._bytes > self.max_bytes:
                _, old = self._data.popitem(last=False)
                self._bytes -= old.nbytes
