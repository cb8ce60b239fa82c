"""plismbench's layout of an embedding (``pathdistill embed --format plism``): ``<out>/<model>/<slide>_to_GMH_S60.tif/
features.npy``, copied from the slide's HDF5, and kept on a rerun while it is that HDF5's copy.

Pure core (numpy, h5py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

#: suffix of PLISM slide names (every slide registered to GMH_S60), which plismbench requires
PLISM_SLIDE_SUFFIX = "_to_GMH_S60.tif"
#: feature rows read at a time into the plismbench array (4,096 x 1,536 float32: 25 MB)
PLISM_READ_ROWS = 4096


def write_plism(h5_path: str | Path, out_dir: str | Path) -> Path:
    """Copy an ``embed_slide`` HDF5 into plismbench's layout, ``<out>/<model>/<slide>_to_GMH_S60.tif/features.npy``.

    The array is (N, 3 + D) float32: columns (level, x, y) with level = 0 and level-0 (x, y), then features,
    in the HDF5's row order. The slide folder ends in ``_to_GMH_S60.tif`` (added
    unless the stem already ends in ``_to_GMH_S60[.tif]``, as PLISM's slides do): plismbench and
    ``evaluation.features_io.discover_plism`` list only such folders and read the stain and scanner from the
    first two ``_``-separated fields of the name, so name slides ``<stain>_<scanner>[...]``. The file is written
    whole or not at all. An existing ``features.npy`` that is this HDF5's copy (:func:`_is_copy_of`) is kept
    as it is: a rerun over a cohort of kept outputs copies nothing again.

    Raises:
        PathDistillError: the file cannot be written whole (full disk, file-size limit).
    """
    import h5py

    from napari_pathdistill.inference.disk_room import save_npy_whole

    h5_path = Path(h5_path)
    with h5py.File(h5_path, "r") as f:  # one (N, 3 + D) array, filled in place (no float64 or other copies)
        feats, coords = f["features"], f["coords"]
        target = plism_path(h5_path, out_dir, str(f.attrs["model"]))
        if _is_copy_of(target, h5_path, feats, coords):
            return target
        rows = np.empty((feats.shape[0], 3 + feats.shape[1]), np.float32)  # the HDF5's row order
        rows[:, 0] = 0
        rows[:, 1:3] = coords[()]
        for start in range(0, len(rows), PLISM_READ_ROWS):
            rows[start : start + PLISM_READ_ROWS, 3:] = feats[start : start + PLISM_READ_ROWS]
    target.parent.mkdir(parents=True, exist_ok=True)
    save_npy_whole(target, rows, kept=h5_path.name)
    return target


def plism_path(h5_path: str | Path, out_dir: str | Path, model: str) -> Path:
    """Where :func:`write_plism` puts the copy of ``h5_path`` made with ``model``."""
    slide = Path(h5_path).stem.removesuffix(PLISM_SLIDE_SUFFIX).removesuffix(PLISM_SLIDE_SUFFIX[:-4])
    return Path(out_dir) / model / (slide + PLISM_SLIDE_SUFFIX) / "features.npy"


def _is_copy_of(target: Path, h5_path: Path, feats: Any, coords: Any) -> bool:
    """Whether ``target`` is the plismbench copy of the HDF5 (datasets ``feats``, ``coords``): written after it
    (a recomputed HDF5 is newer than the copy of its predecessor), of its (N, 3 + D) float32 shape, with its first
    and last rows. Reads two rows of each, whatever N (``np.load`` memory-maps the copy)."""
    try:
        if target.stat().st_mtime_ns < h5_path.stat().st_mtime_ns:
            return False
        copy = np.load(target, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError):
        return False
    n, d = feats.shape
    if copy.dtype != np.float32 or copy.shape != (n, 3 + d):
        return False
    for i in {0, n - 1} if n else ():
        row = np.concatenate([[0.0], coords[i], feats[i]]).astype(np.float32)
        if not np.array_equal(copy[i], row):
            return False
    return True
