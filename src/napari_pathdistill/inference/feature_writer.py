"""The resumable feature file of one slide, shared by ``pathdistill embed`` (``embed.embed_slide``) and the Embed
widget's live map (``live_map.iter_live_map``): its attrs, the tissue grid, the ``<name>.h5.partial`` file with a
``done`` attr, and the one loop that embeds the remaining rows into it.

Pure core (h5py, numpy; no Qt). The loop flushes every ``chunk_batches`` batches and, when cancelled, what it
has embedded since the last flush, so an interrupted run loses nothing that was computed and the next one
resumes at ``done``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from napari_pathdistill.errors import EmptyTissueError, PathDistillError
from napari_pathdistill.inference.batches import iter_batches
from napari_pathdistill.inference.disk_room import fallocate
from napari_pathdistill.wsi.pyramid import Pyramid
from napari_pathdistill.wsi.tiling import TileGrid, make_tile_grid

if TYPE_CHECKING:  # torch-free at import: reading feature files needs no model
    from napari_pathdistill.models.embedding_model import EmbeddingModel


def slide_attrs(pyr: Pyramid, model: EmbeddingModel, tile_px: int, mpp: float, min_tissue: float) -> dict:
    """The HDF5 attrs describing the requested embedding of ``pyr`` (all but ``patch_size_level0``)."""
    attrs = {
        "model": model.spec.name,
        "spec": json.dumps(dataclasses.asdict(model.spec), default=str),
        "weights": model.weights_id,  # another checkpoint of the same name is another embedding
        "tile_px": tile_px,
        "mpp": mpp if pyr.mpp is not None else float("nan"),  # NaN: no slide MPP, level-0 px tiles
        "min_tissue": float(min_tissue),
        "patch_level": 0,
        # where the slide was: dropping the file on napari opens it (_feature_reader); not part of MATCH_ATTRS
        "slide_path": str(Path(pyr.path).resolve()),
    }
    if pyr.mpp_override is not None:  # tiles cut at the user's level-0 um/px: another embedding than without
        attrs["mpp_override"] = float(pyr.mpp_override)
    if pyr.mpp is None:
        attrs["warning"] = (
            f"slide has no MPP: tiles are {tile_px} level-0 px, not {tile_px} px at {mpp:g} um/px as the model "
            "expects; pass --mpp-override UM_PER_PX (fallback_mpp) if you know the scan resolution"
        )
    return attrs


def trident_coords_attrs(attrs: dict) -> dict:
    """The ``coords`` dataset's attrs as TRIDENT writes them (``IO.coords_to_h5``), from our file attrs.

    TRIDENT's slide encoders read the tile side in level-0 px from ``coords.attrs["patch_size_level0"]`` (TITAN,
    GigaPath), its patch extraction ``patch_size`` (px at the target) and the integer magnifications
    ``level0_magnification`` / ``target_magnification`` (10 / um/px), left out for a slide without MPP;
    without ``patch_size_level0`` or ``tile_px``: none.
    """
    if attrs.get("patch_size_level0") is None or attrs.get("tile_px") is None:
        return {}
    size, tile_px, mpp = (
        int(attrs["patch_size_level0"]),
        int(attrs["tile_px"]),
        float(attrs.get("mpp", "nan")),
    )
    out: dict[str, Any] = {"patch_size": tile_px, "patch_size_level0": size, "overlap": 0}
    if attrs.get("slide_path"):
        out["name"] = Path(str(attrs["slide_path"])).stem
    if np.isfinite(mpp):  # the slide's level-0 um/px is mpp * tile_px / size
        out["level0_magnification"] = round(10 * size / (mpp * tile_px))
        out["target_magnification"] = round(10 / mpp)
    return out


def tissue_grid(pyr: Pyramid, tile_px: int, mpp: float, min_tissue: float) -> TileGrid:
    """The tissue tile grid of ``pyr``.

    Raises:
        EmptyTissueError: no tile has ``min_tissue`` tissue (so that no empty feature file is written).
    """
    grid = make_tile_grid(pyr, tile_px=tile_px, mpp=mpp, min_tissue=min_tissue)
    if len(grid) == 0:
        raise EmptyTissueError(
            f"{pyr.path.name}: no {tile_px} px tile has >= {min_tissue:.0%} tissue (an empty or "
            "fluorescence image, or a too strict minimum); nothing written. Lower 'min tissue' "
            "(--min-tissue; 0 keeps every tile) or check the tissue mask (Tissue widget, `pathdistill tiles`)."
        )
    return grid


def tissue_warnings(pyr: Pyramid) -> list[str]:
    """The ``warning`` lines of tiles tissue detection could not decode (``Pyramid.thumbnail_warnings``)."""
    return [
        f"tissue detection: {note} Tissue there has no tiles in this output (neither in coords nor in "
        "skipped_coords)."
        for note in dict.fromkeys(pyr.thumbnail_warnings)
    ]


def add_warnings(attrs: dict, lines: list[str]) -> None:
    """Append ``lines`` to the ``warning`` attr of ``attrs`` (a string, one line per warning)."""
    if lines:
        attrs["warning"] = "\n".join(filter(None, [attrs.get("warning"), *lines]))


def open_partial(partial: Path, model: EmbeddingModel, grid: TileGrid, attrs: dict) -> Any:  # h5py.File
    """Open or create ``partial``; an existing one is reused only if its attrs match (model, weights, tile
    geometry, um/px override, slide: ``outputs.differing_attrs``) and so do its grid coords (rows of two
    checkpoints or slides are never mixed in one file); a reused one gets the request's other attrs (e.g.
    ``warning``). One that does not match, or that HDF5 cannot read (a process killed or a disk filled up
    while it was written), is removed and started over.

    The file's disk space is reserved when it is opened (``features`` allocated whole, then ``fallocate``): HDF5
    reports a write that fails for a full disk only when the file is closed, after its ``done`` attr counted rows
    that were never written, so the space must be there before any row is.

    Raises:
        PathDistillError: ``partial`` is open in another program (HDF5's file lock), which must close it; the disk
            has no room for it (nothing is kept).
    """
    if partial.exists():
        f = _reusable_partial(partial, model, grid, attrs)
        if f is not None:
            _reserve_space(partial, f)
            return f
        partial.unlink()
    return _new_partial(partial, model, grid, attrs)


def _new_partial(partial: Path, model: EmbeddingModel, grid: TileGrid, attrs: dict) -> Any:  # h5py.File
    """Create ``partial`` with its coords and its whole ``features`` dataset on disk, ``done`` 0."""
    import h5py

    f = h5py.File(partial, "w")
    try:
        f.create_dataset("coords", data=np.asarray(grid.coords, np.int64)).attrs.update(
            trident_coords_attrs(attrs)
        )
        # ours only (CLAM/TRIDENT have none): the hover readout of a cached or dropped file shows it
        f.create_dataset("tissue_fraction", data=np.asarray(grid.tissue_fraction, np.float32))
        early = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
        early.set_alloc_time(h5py.h5d.ALLOC_TIME_EARLY)  # its whole extent in the file now, not row by row
        shape = (len(grid.coords), model.dim)
        f.create_dataset("features", shape=shape, dtype="float32", dcpl=early, fill_time="never")
        f.attrs.update(attrs)
        f.attrs["done"] = 0
        f.flush()  # a valid, resumable file from the start, even if the process is killed before the first rows
        _reserve_space(partial, f)
    except BaseException:
        with contextlib.suppress(Exception):
            f.close()
        partial.unlink(missing_ok=True)
        raise
    return f


def _reserve_space(partial: Path, f: Any) -> None:
    """Reserve the disk blocks of ``partial`` (open as ``f``: the size HDF5 gave it), so that writing its rows
    cannot fail for a full disk; a no-op where blocks are reserved already or ``fallocate`` does not exist."""
    size = partial.stat().st_size
    if fallocate(partial, 0, size):
        return
    f.close()
    raise PathDistillError(
        f"no space left in {partial.parent} for {partial.name} ({size / 1e6:.1f} MB): free some space, or "
        "write to another folder, then rerun."
    )


def _reusable_partial(partial: Path, model: EmbeddingModel, grid: TileGrid, attrs: dict) -> Any:
    """``partial`` opened for appending when it resumes this request (see :func:`open_partial`), else None
    (closed): another request, or a file HDF5 cannot read."""
    import h5py

    from napari_pathdistill.inference.outputs import differing_attrs

    try:
        f = h5py.File(partial, "a")
    except BlockingIOError as exc:
        raise PathDistillError(
            f"{partial} is open in another program (HDF5 file lock): close it there, then rerun to resume it."
        ) from exc
    except OSError:
        return None  # unreadable (truncated, corrupt header): its rows cannot be resumed
    try:
        features = f.get("features")
        same = (
            not differing_attrs(f.attrs, attrs)
            and np.array_equal(f["coords"][()], grid.coords)
            and isinstance(features, h5py.Dataset)
            and features.shape == (len(grid.coords), model.dim)
            and 0 <= int(f.attrs["done"]) <= len(grid.coords)
        )
    except (OSError, KeyError, ValueError, TypeError):
        same = False
    if same:
        f.attrs.update(attrs)
        f["coords"].attrs.update(trident_coords_attrs(attrs))  # a partial written before coords had them
        if "warning" not in attrs and "warning" in f.attrs:
            del f.attrs["warning"]
        return f
    f.close()
    return None


def write_rows(
    f: Any,
    model: EmbeddingModel,
    pyr: Pyramid,
    grid: TileGrid,
    *,
    batch_size: int = 32,
    chunk_batches: int = 4,
    num_workers: int = 2,
    prefetch: int | None = None,
    cancel: threading.Event | None = None,
    rows: np.ndarray | None = None,
) -> Iterator[int]:
    """Embed the rows of ``grid`` from the partial file's ``done`` on; yields ``done`` after every flush.

    Rows are written every ``chunk_batches`` batches, with the ``done`` attr after them; when ``cancel`` is set
    (or a KeyboardInterrupt stops the loop: Ctrl-C, SIGTERM in the CLI) the batches embedded since the last
    flush are written too. Tiles that cannot be decoded get NaN rows and
    are listed in the file (``outputs.record_skipped``).

    Args:
        f: the open partial file (:func:`open_partial`).
        rows: optional (N, D) float32 array that receives every written row as well (the live map's copy).
    """
    n, done = len(grid), int(f.attrs["done"])
    skipped: list[int] = []
    batches = iter_batches(
        model, pyr, grid.subset(slice(done, None)), batch_size=batch_size, num_workers=num_workers,
        prefetch=prefetch, cancel=cancel, skipped=skipped,
    )  # fmt: skip
    start, buffer = done, []
    try:
        for i, (_s, feats) in enumerate(batches, start=1):
            buffer.append(feats)
            if i % chunk_batches == 0 or done + sum(map(len, buffer)) == n:
                done = _flush(f, buffer, done, [start + k for k in skipped], rows)
                skipped.clear()
                yield done
    except KeyboardInterrupt:  # Ctrl-C (or the CLI's SIGTERM): keep what was embedded, then stop
        if buffer:
            _flush(f, buffer, done, [start + k for k in skipped], rows)
        raise
    if buffer:  # cancelled between two flushes: keep what was embedded
        yield _flush(f, buffer, done, [start + k for k in skipped], rows)


def _flush(f: Any, buffer: list[np.ndarray], done: int, skipped: list[int], rows: np.ndarray | None) -> int:
    """Write the buffered (b, D) batches at row ``done``, the skipped tiles, then the ``done`` attr; empties
    ``buffer`` and returns the new ``done``."""
    from napari_pathdistill.inference.outputs import record_skipped

    block = np.concatenate(buffer)
    f["features"][done : done + len(block)] = block
    if rows is not None:
        rows[done : done + len(block)] = block
    record_skipped(f, skipped)
    done += len(block)
    f.attrs["done"] = done
    f.flush()
    buffer.clear()
    return done
