"""CLAM's layout of an embedding (``pathdistill embed --format clam``): ``<out>/h5_files/<slide>.h5`` and
``<out>/pt_files/<slide>.pt``, copied from the slide's complete HDF5, and kept on a rerun while they are its copies.

Source read (mahmoodlab/CLAM): ``extract_features_fp.py`` writes ``h5_files/<slide_id>.h5`` with
``utils/file_utils.save_hdf5`` (datasets ``features`` (N, D) float32 and ``coords`` (N, 2) int32, no attrs), then
``torch.save(torch.from_numpy(features), pt_files/<slide_id>.pt)``; ``create_patches_fp.py``
(``wsi_core/WholeSlideImage.process_contour``) gives its ``coords`` the attrs ``patch_size`` (px at
``patch_level``), ``patch_level``, ``downsample``, ``downsampled_level_dim``, ``level_dim``, ``name`` and
``save_path``, of which ``Whole_Slide_Bag_FP`` reads ``patch_level`` and ``patch_size``;
``dataset_modules/dataset_generic.Generic_MIL_Dataset`` loads ``<data_dir>/pt_files/<slide_id>.pt`` with
``torch.load`` (or, with ``load_from_h5(True)``, ``h5_files/<slide_id>.h5``'s features and coords).

Pure core (numpy, h5py; torch for the ``.pt``, imported when one is written or checked).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from napari_pathdistill.errors import PathDistillError

#: the sub-folders of ``--out`` that CLAM's ``extract_features_fp.py`` writes (its ``--feat_dir``)
CLAM_H5_DIR, CLAM_PT_DIR = "h5_files", "pt_files"


def clam_paths(h5_path: str | Path, out_dir: str | Path) -> tuple[Path, Path]:
    """Where :func:`write_clam` puts the copies of ``h5_path``: ``<out>/h5_files/<slide>.h5`` and
    ``<out>/pt_files/<slide>.pt`` (``<slide>``: the HDF5's stem, CLAM's ``slide_id``)."""
    slide_id, out = Path(h5_path).stem, Path(out_dir)
    return out / CLAM_H5_DIR / f"{slide_id}.h5", out / CLAM_PT_DIR / f"{slide_id}.pt"


def clam_coords_attrs(attrs: Any, slide_id: str) -> dict[str, Any]:
    """The ``coords`` attrs of CLAM's patch files (``process_contour``) that our HDF5's attrs tell: ``patch_size``
    (level-0 px: ``patch_level`` 0, ``downsample`` (1, 1)) and ``name``; not ``level_dim`` /
    ``downsampled_level_dim`` (the slide's size, which our file does not store) nor ``save_path``."""
    return {
        "patch_size": int(attrs["patch_size_level0"]),
        "patch_level": 0,
        "downsample": np.array([1.0, 1.0]),
        "name": slide_id,
    }


def write_clam(h5_path: str | Path, out_dir: str | Path) -> tuple[Path, Path]:
    """Copy a complete ``embed_slide`` HDF5 into CLAM's layout (:func:`clam_paths`); returns both paths.

    ``h5_files/<slide>.h5``: ``features`` (N, D) float32 and ``coords`` (N, 2) int32 level-0 (x, y) in the HDF5's
    row order, ``coords`` attrs of :func:`clam_coords_attrs`, file attrs ``model``, ``weights``, ``slide_path``
    and ``level0_mpp`` (ours: CLAM reads none of them; the feature-file reader places the map with them).
    ``pt_files/<slide>.pt``: ``torch.save`` of the (N, D) float32 tensor of the same features, which
    ``torch.load(path, weights_only=True)`` reads. Each is written whole or not at all, the ``.pt`` last (CLAM's
    ``extract_features_fp`` takes a slide whose ``.pt`` exists as done). A copy that is this HDF5's (written
    after it, of its shapes and first and last rows) is kept as it is: a rerun copies nothing again.

    Raises:
        PathDistillError: ``h5_path`` is no complete embedding (a ``.partial`` of an interrupted run, whose rows
            a rerun resumes), or a copy cannot be written whole (full disk, file-size limit).
    """
    import h5py

    h5_path = Path(h5_path)
    h5_copy, pt = clam_paths(h5_path, out_dir)
    with h5py.File(h5_path, "r") as f:
        feats, coords = f["features"], f["coords"]
        _require_complete(h5_path, f.attrs, len(coords))
        attrs = clam_coords_attrs(f.attrs, h5_path.stem)
        keep_h5 = _is_h5_copy(h5_copy, h5_path, feats, coords, attrs["patch_size"])
        keep_pt = _is_pt_copy(pt, h5_path, feats)
        if keep_h5 and keep_pt:
            return h5_copy, pt
        rows, xy, extra = feats[()], coords[()], _file_attrs(f.attrs)
    if not keep_h5:
        _write_h5(h5_copy, rows, xy, attrs, extra, kept=h5_path.name)
    if not keep_pt:
        _write_pt(pt, rows, kept=h5_path.name)
    return h5_copy, pt


def _require_complete(h5_path: Path, attrs: Any, n: int) -> None:
    """Refuse a partial output (``.h5.partial``, or fewer rows ``done`` than it has)."""
    done = int(attrs.get("done", n))
    if h5_path.suffix != ".h5" or done != n:
        raise PathDistillError(
            f"{h5_path.name} is not a complete embedding ({done} of {n} tiles): CLAM's copy is written from the "
            "finished .h5 only; rerun to resume it."
        )


def _file_attrs(attrs: Any) -> dict[str, Any]:
    """Ours on the CLAM copy: ``model``, ``weights``, ``slide_path`` and the level-0 ``level0_mpp`` (tile um/px x
    tile px / level-0 tile side) where the slide states one."""
    out = {k: attrs[k] for k in ("model", "weights", "slide_path") if k in attrs}
    mpp = float(attrs.get("mpp", np.nan))
    if np.isfinite(mpp) and "tile_px" in attrs and "patch_size_level0" in attrs:
        out["level0_mpp"] = mpp * float(attrs["tile_px"]) / float(attrs["patch_size_level0"])
    return out


def _ends(n: int) -> set[int]:
    """The first and last of ``n`` rows (none of 0): what a copy's check reads, whatever ``n``."""
    return {0, n - 1} if n else set()


def _holds(cf: Any, cc: Any, feats: Any, coords: Any) -> bool:
    """Whether features / coords datasets ``cf`` / ``cc`` have the shapes of ``feats`` / ``coords`` and their first
    and last rows (two rows read of each, whatever N)."""
    if cf.shape != feats.shape or cc.shape != coords.shape:
        return False
    return all(
        np.array_equal(cf[i], feats[i]) and np.array_equal(cc[i], coords[i]) for i in _ends(len(feats))
    )


def _newer(copy: Path, source: Path) -> bool:
    """``copy`` exists and was written after ``source`` (a recomputed HDF5 is newer than its predecessor's copy)."""
    try:
        return copy.stat().st_mtime_ns >= source.stat().st_mtime_ns
    except OSError:
        return False


def _is_h5_copy(target: Path, h5_path: Path, feats: Any, coords: Any, patch_size: int) -> bool:
    """Whether ``target`` is the CLAM HDF5 copy of ``feats`` / ``coords`` (:func:`_newer`, same shapes, float32,
    ``patch_size``, first and last rows). Reads two rows of each."""
    import h5py

    if not _newer(target, h5_path):
        return False
    try:
        with h5py.File(target, "r") as c:
            cf, cc = c["features"], c["coords"]
            if cf.dtype != np.float32 or int(cc.attrs.get("patch_size", -1)) != patch_size:
                return False
            return _holds(cf, cc, feats, coords)
    except (OSError, KeyError, TypeError, ValueError):
        return False


def _is_pt_copy(target: Path, h5_path: Path, feats: Any) -> bool:
    """Whether ``target`` is the ``.pt`` copy of ``feats`` (:func:`_newer`, its (N, D) float32 shape, first and
    last rows). The tensor is memory-mapped: two rows read whatever N; nothing is unpickled."""
    if not _newer(target, h5_path):
        return False
    import torch

    try:
        t = torch.load(target, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # not a tensor file (damaged, an older format): written again
        return False
    if not isinstance(t, torch.Tensor) or t.dtype != torch.float32 or tuple(t.shape) != feats.shape:
        return False
    return all(np.array_equal(t[i].numpy(), feats[i]) for i in _ends(len(feats)))


def _write_h5(
    target: Path, rows: np.ndarray, xy: np.ndarray, coords_attrs: dict, attrs: dict, kept: str
) -> None:
    """``h5_files/<slide>.h5`` whole or not at all (``disk_room.whole_file``): contiguous datasets, coords int32
    as CLAM's (int64 past 2**31 px)."""
    import h5py

    from napari_pathdistill.inference.disk_room import whole_file

    xy = xy.astype(np.int32) if len(xy) == 0 or np.abs(xy).max() < 2**31 else xy
    with whole_file(target, rows.nbytes + xy.nbytes, kept) as tmp:
        try:
            with h5py.File(tmp, "w") as f:
                f.create_dataset("features", data=np.ascontiguousarray(rows, np.float32))
                f.create_dataset("coords", data=xy).attrs.update(coords_attrs)
                f.attrs.update(attrs)
        except (OSError, RuntimeError) as exc:  # HDF5 raises a full disk at its close as a RuntimeError
            raise _os_error(exc) from exc
        _read_back(tmp, rows, xy)


def _read_back(path: Path, rows: np.ndarray, xy: np.ndarray) -> None:
    """Raise ``OSError`` unless the HDF5 at ``path`` holds ``rows`` and ``xy`` (shapes, first and last rows): a
    write HDF5 failed to finish (a full disk at its close, which h5py may only print) is not renamed into place."""
    import errno

    import h5py

    try:
        with h5py.File(path, "r") as f:
            whole = _holds(f["features"], f["coords"], rows, xy)
    except (OSError, KeyError, RuntimeError, ValueError):
        whole = False
    if not whole:
        raise OSError(errno.EIO, "it does not read back whole: cut short (full disk, file-size limit?)")


def _os_error(exc: Exception) -> OSError:
    """The ``OSError`` of a failed HDF5 write, its errno read from HDF5's message ("errno = 27, ...": "File too
    large"), not the message's paragraph of HDF5 internals."""
    import errno
    import os
    import re

    found = re.search(r"errno = (\d+)", str(exc))
    code = int(found.group(1)) if found else getattr(exc, "errno", None) or errno.EIO
    return OSError(code, os.strerror(code))


def _write_pt(target: Path, rows: np.ndarray, kept: str) -> None:
    """``pt_files/<slide>.pt``: ``torch.save`` of the (N, D) float32 tensor, whole or not at all."""
    import torch

    from napari_pathdistill.inference.disk_room import whole_file

    with whole_file(target, rows.nbytes, kept) as tmp, open(tmp, "wb") as fh:
        # through a Python file: a full disk or file-size limit is an OSError (a path gives torch's C++ stream,
        # whose failure is "RuntimeError: basic_ios::clear: iostream error")
        torch.save(torch.from_numpy(np.ascontiguousarray(rows, np.float32)), fh)
