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


def _open_partial(partial, model: EmbeddingModel, grid: TileGrid, attrs: dict):  # -> h5py.File
    """Open/create ``partial``; an existing one is reused only if model name and grid coords match."""
    import h5py

    if partial.exists():
        f = h5py.File(partial, "a")
        same = f.attrs.get("model") == model.spec.name and np.array_equal(f["coords"][()], grid.coords)
        if same:
            return f
        f.close()
        partial.unlink()
    f = h5py.File(partial, "w")
    f.create_dataset("coords", data=np.asarray(grid.coords, np.int64))
    f.create_dataset("features", shape=(len(grid.coords), model.dim), dtype="float32")
    f.attrs.update(attrs)
    f.attrs["done"] = 0
    return f


def embed_slide(
    slide,
    model: EmbeddingModel,
    out_dir,
    *,
    tile_px: int | None = None,
    mpp: float | None = None,
    batch_size: int = 32,
    chunk_batches: int = 4,
    cancel: threading.Event | None = None,
    progress=None,
):
    """Embed the tissue tiles of ``slide`` into ``<out_dir>/<slide stem>.h5`` (CLAM/TRIDENT layout).

    Datasets ``features`` (N, D) float32 and ``coords`` (N, 2) int64 level-0 (x, y); attrs ``model``, ``spec``
    (JSON), ``tile_px``, ``mpp``, ``patch_level`` (0) and ``patch_size_level0``. Rows are written every
    ``chunk_batches`` batches into ``<name>.h5.partial`` with a ``done`` attr, so a killed or cancelled run
    resumes there; the file is renamed to ``.h5`` only when complete.

    Returns:
        The path of the finished HDF5 file (or of the ``.partial`` file when cancelled).
    """
    import dataclasses
    import json
    from pathlib import Path

    from napari_pathdistill.wsi import open_pyramid
    from napari_pathdistill.wsi.tiling import make_tile_grid

    out = Path(out_dir) / f"{Path(slide).stem}.h5"
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_suffix(".h5.partial")
    tile_px, mpp = tile_px or model.spec.tile_px, mpp or model.spec.mpp
    with open_pyramid(slide) as pyr:
        grid = make_tile_grid(pyr, tile_px=tile_px, mpp=mpp)
        size0 = round(grid.size_level0)
        attrs = {
            "model": model.spec.name,
            "spec": json.dumps(dataclasses.asdict(model.spec), default=str),
            "tile_px": tile_px,
            "mpp": mpp,
            "patch_level": 0,
            "patch_size_level0": size0,
        }
        with _open_partial(partial, model, grid, attrs) as f:
            n, done = len(grid.coords), int(f.attrs["done"])
            step = batch_size * chunk_batches
            while done < n:
                sub = dataclasses.replace(
                    grid,
                    coords=grid.coords[done : done + step],
                    tissue_fraction=grid.tissue_fraction[done : done + step],
                )
                res = None
                for item in iter_embeddings(model, pyr, sub, batch_size=batch_size, cancel=cancel):
                    res = item if isinstance(item, EmbeddingResult) else None
                if res is None:
                    return partial
                f["features"][done : done + len(sub.coords)] = res.features
                done += len(sub.coords)
                f.attrs["done"] = done
                if progress is not None:
                    progress(Progress(done, n, "embedding"))
    partial.replace(out)
    return out


def write_plism(h5_path, out_dir):
    """Copy an ``embed_slide`` HDF5 into plismbench's ``<out>/<model>/<slide>/features.npy`` layout.

    The array is (N, 3 + D) float32: columns (level, x, y) with level = 0 and level-0 (x, y), then features.
    """
    from pathlib import Path

    import h5py

    h5_path = Path(h5_path)
    with h5py.File(h5_path, "r") as f:
        feats, coords, name = f["features"][()], f["coords"][()], str(f.attrs["model"])
    cols = np.concatenate([np.zeros((len(coords), 1)), coords], axis=1)
    target = Path(out_dir) / name / h5_path.stem / "features.npy"
    target.parent.mkdir(parents=True, exist_ok=True)
    np.save(target, np.concatenate([cols, feats], axis=1).astype(np.float32))
    return target
