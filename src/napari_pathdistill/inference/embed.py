"""Tile embedding of a slide: tiles read in a background thread, embedded in batches, cancellable."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from napari_pathdistill.inference.progress import Progress
from napari_pathdistill.models.embedding_model import EmbeddingModel
from napari_pathdistill.wsi.pyramid import Pyramid
from napari_pathdistill.wsi.tiling import TileGrid, read_tiles


@dataclass
class EmbeddingResult:
    """Embeddings of the tiles of one grid.

    Attributes:
        features: (N, D) float32, row i = tile ``grid.coords[i]``.
        grid: the tile grid.
        model_name: the model's registry/checkpoint name.
    """

    features: np.ndarray
    grid: TileGrid
    model_name: str


def iter_embeddings(
    model: EmbeddingModel,
    pyramid: Pyramid,
    grid: TileGrid,
    *,
    batch_size: int = 32,
    num_workers: int = 2,
    cancel: threading.Event | None = None,
) -> Iterator[Progress | EmbeddingResult]:
    """Embed every tile of ``grid``; yields ``Progress(done, N, "embedding")`` per batch, then the result.

    Reading of the next batch (``num_workers`` threads, the pyramid's reads are thread-safe) overlaps the
    model's forward pass. When ``cancel`` is set the generator stops without yielding a result.
    """
    n = len(grid.coords)
    starts = list(range(0, n, batch_size))
    feats: list[np.ndarray] = []
    with ThreadPoolExecutor(max_workers=max(1, num_workers)) as pool:

        def submit(s: int):
            return pool.submit(read_tiles, pyramid, grid, range(s, min(n, s + batch_size)))

        pending = submit(starts[0]) if starts else None
        for j, s in enumerate(starts):
            tiles = pending.result()
            pending = submit(starts[j + 1]) if j + 1 < len(starts) else None
            if cancel is not None and cancel.is_set():
                return
            feats.append(model.embed(tiles))
            yield Progress(min(n, s + batch_size), n, "embedding")
    dim = model.dim
    out = np.concatenate(feats).astype(np.float32) if feats else np.zeros((0, dim), np.float32)
    yield EmbeddingResult(out, grid, model.spec.name)
