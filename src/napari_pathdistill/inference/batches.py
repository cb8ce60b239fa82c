"""Batches of tile embeddings read ahead by reader threads (bounded queue), in grid order, cancellable: the one
loop under ``embed.iter_embeddings``, ``feature_writer.write_rows`` (``pathdistill embed``, the live map) and the
dense patch-token maps."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import numpy as np

from napari_pathdistill.wsi.pyramid import Pyramid
from napari_pathdistill.wsi.tiling import TileGrid, read_tiles

if TYPE_CHECKING:
    from napari_pathdistill.models.embedding_model import EmbeddingModel


def iter_batches(
    model: EmbeddingModel,
    pyramid: Pyramid,
    grid: TileGrid,
    *,
    batch_size: int = 32,
    num_workers: int = 2,
    prefetch: int | None = None,
    cancel: threading.Event | None = None,
    skipped: list[int] | None = None,
    embed: Callable[[Any], np.ndarray] | None = None,
    read_fn: Callable[[Pyramid, TileGrid, Sequence[int]], np.ndarray] | None = None,
) -> Iterator[tuple[int, np.ndarray]]:
    """Embed the tiles of ``grid`` batch by batch, in order; yields ``(start, features (b, D) float32)``.

    ``num_workers`` threads read tiles (the pyramid's reads are thread-safe) into host tensors (pinned on
    CUDA) while the model runs; at most ``prefetch`` batches (default ``num_workers + 1``) are read or waiting
    at any time, so memory stays bounded. Stops, without yielding further, once ``cancel`` is set; pending
    reads are cancelled when the generator is closed. A tile that cannot be decoded raises
    :class:`~napari_pathdistill.errors.CorruptTileError`, unless a ``skipped`` list is given: then its grid
    index is appended there and its feature row is NaN. ``embed`` replaces ``model.embed`` as the function
    of a batch of host tiles (e.g. patch tokens (b, gh, gw, D), see ``inference.dense_maps``); ``read_fn``
    replaces ``read_tiles`` as the reader of a batch of tiles (e.g. slide B's tiles resampled through a
    registration, ``inference.pair_tiles``).
    """
    n = len(grid.coords)
    depth = max(1, num_workers + 1 if prefetch is None else prefetch)
    starts = iter(range(0, n, batch_size))
    pending: deque[tuple[int, Future]] = deque()
    pool = ThreadPoolExecutor(max_workers=max(1, num_workers), thread_name_prefix="read_tiles")

    def read(start: int) -> tuple[object, list[int]]:
        indices = range(start, min(n, start + batch_size))
        if skipped is None:
            return model.host_tensor((read_fn or read_tiles)(pyramid, grid, indices)), []
        tiles, bad = read_readable_tiles(pyramid, grid, indices)
        return model.host_tensor(tiles), bad

    try:
        while True:
            while len(pending) < depth and (s := next(starts, None)) is not None:
                pending.append((s, pool.submit(read, s)))
            if not pending or (cancel is not None and cancel.is_set()):
                return
            start, future = pending.popleft()
            tiles, bad = future.result()
            if cancel is not None and cancel.is_set():
                return
            feats = (embed or model.embed)(tiles)
            if bad and skipped is not None:
                feats = np.array(feats, np.float32)
                feats[bad] = np.nan
                skipped.extend(start + k for k in bad)
            yield start, feats
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def read_readable_tiles(
    pyramid: Pyramid, grid: TileGrid, indices: Sequence[int]
) -> tuple[np.ndarray, list[int]]:
    """``read_tiles``, with the tiles that cannot be decoded flat grey: ((B, px, px, 3) uint8, their positions
    in ``indices``). A batch is read tile by tile only when it holds a corrupt tile."""
    from napari_pathdistill.errors import CorruptTileError
    from napari_pathdistill.wsi._blocks import CORRUPT_GREY

    try:
        return read_tiles(pyramid, grid, indices), []
    except CorruptTileError:
        pass
    out = np.full((len(indices), grid.tile_px, grid.tile_px, 3), CORRUPT_GREY, np.uint8)
    bad = []
    for k, i in enumerate(indices):
        try:
            out[k] = read_tiles(pyramid, grid, [i])[0]
        except CorruptTileError:
            bad.append(k)
    return out, bad
