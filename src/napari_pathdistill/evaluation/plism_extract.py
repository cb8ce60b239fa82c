"""Features of PLISM's tile files in plismbench's ``features.npy`` layout (``plismbench extract``, reproduced).

PLISM (Hugging Face ``owkin/plism-dataset``, as plismbench downloads it) holds one HDF5 file per slide,
``<stain>_<scanner>_to_GMH_S60.tif.h5``; every key is a tile id ``<prefix>_<c0>_<c1>_<c2>`` whose dataset is
the (224, 224, 3) uint8 tile (plismbench ``engine/extract/extract_from_h5.py::H5Dataset``). plismbench writes
``<export_dir>/<extractor>/<slide_id>/features.npy`` with ``slide_id`` = the file name without ``.h5``: an
(N, 3 + D) float32 array whose first three columns are the tile id's three integers and whose rows are sorted
by columns 1 and 2 (``engine/extract/utils.py::process_imgs``, ``sort_coords``, ``save_features``).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from napari_pathdistill.atomic import atomic_write_text
from napari_pathdistill.errors import Cancelled, EvaluationError
from napari_pathdistill.inference.disk_room import save_npy_whole
from napari_pathdistill.progress import Progress

if TYPE_CHECKING:
    from napari_pathdistill.models.embedding_model import EmbeddingModel

PLISM_H5_GLOB = "*_to_GMH_S60.tif.h5"
#: beside each features.npy: the model and weights hash that wrote it (plismbench's layout has no such field)
STAMP_FILE = "pathdistill.json"


def tile_coords(tile_ids: list[str]) -> np.ndarray:
    """(N, 3) int64 coordinates from PLISM tile ids (the three integers after the first ``_``)."""
    try:
        coords = np.array([t.split("_")[1:] for t in tile_ids]).astype(np.int64)
    except ValueError as err:
        raise EvaluationError(f"PLISM tile ids must be <prefix>_<int>_<int>_<int>: {err}") from err
    if coords.ndim != 2 or coords.shape[1] != 3:
        raise EvaluationError(f"PLISM tile ids must carry three integers, got e.g. {tile_ids[:1]}")
    return coords


def sort_rows(features: np.ndarray) -> np.ndarray:
    """Rows sorted by columns 1 then 2 (plismbench's ``sort_coords``: pandas ``sort_values(["x", "y"])``)."""
    return features[np.lexsort((features[:, 2], features[:, 1]))]


def _read_tiles(h5_path: Path, f, keys: list[str], shape: tuple[int, ...] | None) -> np.ndarray:
    """(B, H, W, 3) uint8 tiles of ``keys``; each must be an (H, W, 3) uint8 dataset of the slide's one tile size
    ``shape`` (that of its first tile when None).

    Raises:
        EvaluationError: naming the file and the first tile that is not such a dataset.
    """
    import h5py

    tiles: list[np.ndarray] = []
    for k in keys:
        d = f[k]
        ok = isinstance(d, h5py.Dataset) and d.dtype == np.uint8 and d.ndim == 3 and d.shape[-1] == 3
        if not ok or (shape or (tiles[0].shape if tiles else d.shape)) != d.shape:
            what = f"{d.shape} {d.dtype}" if isinstance(d, h5py.Dataset) else "a group"
            want = f"{shape or tiles[0].shape} uint8" if ok else "(H, W, 3) uint8"
            raise EvaluationError(
                f"{h5_path}: tile {k!r} is {what}, not {want} like the slide's other tiles (PLISM tiles are "
                "(224, 224, 3) uint8); re-download the file"
            )
        tiles.append(d[()])
    return np.stack(tiles)


def _embed_slide(
    h5_path: Path, model: EmbeddingModel, batch_size: int, cancel: threading.Event | None
) -> Iterator[Progress | np.ndarray]:
    import h5py

    try:
        f = h5py.File(h5_path, "r")
    except OSError as err:  # truncated download: h5py's message named no file
        raise EvaluationError(f"{h5_path}: not a readable HDF5 file ({err}); re-download it") from err
    with f:
        keys = list(f.keys())
        if not keys:
            raise EvaluationError(f"{h5_path}: no tiles")
        chunks, shape = [], None
        for start in range(0, len(keys), batch_size):
            if cancel is not None and cancel.is_set():
                raise Cancelled("PLISM extraction cancelled")
            yield Progress(start, len(keys), h5_path.name)
            tiles = _read_tiles(h5_path, f, keys[start : start + batch_size], shape)
            shape = tiles.shape[1:]
            chunks.append(model.embed(tiles))
    feats = np.concatenate(chunks).astype(np.float32)
    yield sort_rows(np.concatenate([tile_coords(keys).astype(np.float32), feats], axis=1))


def iter_plism_extract(
    plism_dir: str | Path,
    model: EmbeddingModel,
    export_dir: str | Path,
    *,
    extractor: str | None = None,
    batch_size: int = 32,
    overwrite: bool = False,
    cancel: threading.Event | None = None,
) -> Iterator[Progress | list[Path]]:
    """Embed every PLISM slide file of ``plism_dir`` and write plismbench's ``features.npy`` per slide.

    Args:
        plism_dir: folder of ``*_to_GMH_S60.tif.h5`` files.
        model: the encoder (its device: GPU when loaded there).
        export_dir: plismbench's ``--export-dir``; files go to ``<export_dir>/<extractor>/<slide_id>/``.
        extractor: folder name (default the model's name); pass it as ``--extractor`` to ``evaluate``.
        batch_size: tiles per forward pass.
        overwrite: re-extract slides whose features.npy exists (by default they are skipped: resume, unless
            the slide's ``pathdistill.json`` beside it names another model or weights: two checkpoints of one
            name, e.g. a student's epochs, extract into the same folder).
        cancel: optional event that stops the run between batches (finished slides stay written).

    Yields:
        ``Progress`` per batch (stage = slide file), then the list of features.npy paths.
    """
    files = sorted(Path(plism_dir).glob(PLISM_H5_GLOB))
    if not files:
        raise EvaluationError(f"no PLISM tile files ({PLISM_H5_GLOB}) in {plism_dir}")
    root = Path(export_dir) / (extractor or model.spec.name)
    stamp = {"model": model.spec.name, "weights": model.weights_id, "embedding_dtype": model.amp_name}
    outputs = []
    for i, h5_path in enumerate(files):
        target = root / h5_path.name.removesuffix(".h5") / "features.npy"
        outputs.append(target)
        yield Progress(i, len(files), f"slide {i + 1}/{len(files)}")
        if target.is_file() and not overwrite and _same_model(target, stamp):
            continue
        arr = None
        for item in _embed_slide(h5_path, model, batch_size, cancel):
            if isinstance(item, Progress):
                yield item
            else:
                arr = item
        if arr is None:
            raise EvaluationError(f"{h5_path}: extraction ended without features")
        target.parent.mkdir(parents=True, exist_ok=True)
        _write_stamped(target, arr, stamp, kept=h5_path.name)
    yield Progress(len(files), len(files), "done")
    yield outputs


def _write_stamped(target: Path, arr: np.ndarray, stamp: dict[str, str], kept: str) -> None:
    """Write ``target`` whole (its size checked: ``disk_room.save_npy_whole``) between a pending stamp and the
    final one, so that a run killed between the two writes leaves a file no model takes as its own."""
    stamp_file = target.with_name(STAMP_FILE)
    atomic_write_text(stamp_file, json.dumps({**stamp, "pending": True}))
    save_npy_whole(target, arr, kept=kept, elsewhere="another --export-dir")
    atomic_write_text(stamp_file, json.dumps(stamp))


def _same_model(target: Path, stamp: dict[str, str]) -> bool:
    """Whether ``target`` (a features.npy) was written by the model of ``stamp``: its ``pathdistill.json`` says so
    (and not that the write was still pending), or it has none (plismbench's own export, or one of an earlier
    version: kept, as before)."""
    try:
        written = json.loads(target.with_name(STAMP_FILE).read_text())
    except FileNotFoundError:
        return True
    except (OSError, ValueError):
        return False
    return (
        isinstance(written, dict)
        and not written.get("pending")
        and all(written.get(k) == v for k, v in stamp.items())
    )
