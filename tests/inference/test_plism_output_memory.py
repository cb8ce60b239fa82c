"""``write_plism`` (``pathdistill embed --format plism``) holds one copy of the (N, 3 + D) array, not four.

Was (found measuring a 100,000 x 1,536 slide, a 615 MB ``features.npy``): 2.57 GB peak RSS in one call, as the
features, a float64 concatenation of them with the coords and its float32 cast were all alive at once; a dask
worker per core each writing one made that several GB per machine. Measured here with tracemalloc (numpy reports
its allocations to it), on a 20,000 x 384 file."""

from __future__ import annotations

import tracemalloc

import h5py
import numpy as np

from napari_pathdistill.inference.embed import write_plism


def test_write_plism_allocates_about_one_copy_of_its_output(tmp_path) -> None:
    n, d = 20_000, 384
    rng = np.random.default_rng(0)
    feats = rng.standard_normal((n, d), dtype=np.float32)
    coords = rng.integers(0, 2**31, (n, 2)).astype(
        np.int64
    )  # beyond float32's exact integers, as in old runs
    with h5py.File(tmp_path / "s.h5", "w") as f:
        f["features"], f["coords"] = feats, coords
        f.attrs["model"] = "m"
    tracemalloc.start()
    try:
        npy = write_plism(tmp_path / "s.h5", tmp_path / "out")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    out_bytes = n * (3 + d) * 4
    assert peak < 1.3 * out_bytes, f"peak {peak / 1e6:.1f} MB for a {out_bytes / 1e6:.1f} MB array"
    rows = np.load(npy)
    expected = np.concatenate([np.zeros((n, 1)), coords, feats], axis=1).astype(np.float32)
    assert rows.dtype == np.float32 and np.array_equal(rows, expected)  # the same values as before
