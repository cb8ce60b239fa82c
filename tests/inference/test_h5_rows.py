"""Row-chunked feature datasets (TRIDENT one row per chunk, CLAM 32 rows appended by batch) read from their raw
chunk bytes give exactly h5py's arrays; layouts where that does not apply fall back to h5py."""

from __future__ import annotations

import threading
from pathlib import Path

import h5py
import numpy as np
import pytest

from napari_pathdistill.errors import Cancelled
from napari_pathdistill.inference.feature_files import read_feature_file
from napari_pathdistill.inference.h5_rows import raw_rows, read_rows
from napari_pathdistill.progress import cancel_scope


def _trident(path: Path, feats: np.ndarray, coords: np.ndarray) -> Path:
    """TRIDENT's ``save_h5``: chunks (1, ...), maxshape (None, ...), all rows written at once."""
    with h5py.File(path, "w") as f:
        for key, val in (("features", feats), ("coords", coords)):
            d = f.create_dataset(key, shape=val.shape, maxshape=(None, *val.shape[1:]),
                                 chunks=(1, *val.shape[1:]), dtype=val.dtype)  # fmt: skip
            d[:] = val
        f["coords"].attrs.update({"patch_size": 224, "patch_size_level0": 448, "level0_magnification": 40})
    return path


def _clam(path: Path, feats: np.ndarray, coords: np.ndarray, batch: int = 50) -> Path:
    """CLAM's ``save_hdf5``: chunks (32, ...), each batch appended to features then coords (chunks interleave)."""
    for i in range(0, len(feats), batch):
        with h5py.File(path, "w" if i == 0 else "a") as f:
            for key, val in (("features", feats[i : i + batch]), ("coords", coords[i : i + batch])):
                if key not in f:
                    f.create_dataset(key, shape=val.shape, maxshape=(None, *val.shape[1:]),
                                     chunks=(32, *val.shape[1:]), dtype=val.dtype)[:] = val  # fmt: skip
                else:
                    f[key].resize(len(f[key]) + len(val), axis=0)
                    f[key][-len(val) :] = val
    return path


def _data(n: int = 1_001, d: int = 48, dtype: str = "float32") -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    coords = np.stack([np.arange(n) % 40 * 448, np.arange(n) // 40 * 448], 1).astype(np.int64)
    return rng.standard_normal((n, d)).astype(dtype), coords


@pytest.mark.parametrize("dtype", ["float32", "float16", ">f4", "float64"])
@pytest.mark.parametrize("layout", [_trident, _clam])
def test_row_chunked_layouts_are_read_raw_and_exactly(tmp_path, layout, dtype) -> None:
    feats, coords = _data(dtype=dtype)
    path = layout(tmp_path / "slide.h5", feats, coords)
    with h5py.File(path, "r") as f:
        for key in ("features", "coords"):
            fast = raw_rows(f[key])
            assert fast is not None, key  # the raw path applies to both layouts
            assert fast.dtype == f[key].dtype
            np.testing.assert_array_equal(fast, f[key][()])
    ff = read_feature_file(path)
    np.testing.assert_array_equal(ff.features, feats.astype(np.float32))
    np.testing.assert_array_equal(ff.coords, coords)


def test_other_layouts_fall_back_to_h5py(tmp_path) -> None:
    feats, _ = _data(n=300)
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f.create_dataset("contiguous", data=feats)
        f.create_dataset("gzip", data=feats, chunks=(1, feats.shape[1]), compression="gzip")
        f.create_dataset("column_chunks", data=feats, chunks=(300, 8))  # chunks are not whole rows
        sparse = f.create_dataset("sparse", shape=feats.shape, chunks=(1, feats.shape[1]), dtype="f4")
        sparse[:10] = feats[:10]  # the other chunks are never allocated
        f.create_dataset("strings", data=np.array([b"a", b"b"]), chunks=(1,))
        for key in f:
            assert raw_rows(f[key]) is None, key
            np.testing.assert_array_equal(read_rows(f[key]), f[key][()])


def test_a_cancelled_read_stops_instead_of_falling_back_to_h5py(tmp_path: Path) -> None:
    """A 100k-row read takes seconds on a busy disk: a cancelled scope stops it between its block reads (the
    fallback for "anything unexpected" must not swallow the cancellation and read the rows with h5py)."""
    rng = np.random.default_rng(0)
    feats = rng.standard_normal((300, 8)).astype(np.float32)
    path = _trident(tmp_path / "t.h5", feats, np.arange(600, dtype=np.int64).reshape(300, 2))
    cancel = threading.Event()
    cancel.set()
    with h5py.File(path) as f:
        with cancel_scope(cancel, "read cancelled"), pytest.raises(Cancelled, match="read cancelled"):
            read_rows(f["features"])
        np.testing.assert_array_equal(read_rows(f["features"]), feats)  # outside the scope: read
