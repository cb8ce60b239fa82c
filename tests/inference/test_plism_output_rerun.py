"""A rerun of ``pathdistill embed --format h5,plism`` keeps a slide's plismbench ``features.npy`` when it is the
copy of the kept HDF5, and rewrites it when it is not (another shape, rows, or an older file than the HDF5).

Was (found resuming a cohort after Ctrl-C): every slide whose complete HDF5 was kept had its ``features.npy``
copied again from the HDF5 (seen as a new mtime of every copy), so a resumed 1,000-slide cohort of 100k x 1,536
tiles would rewrite ~600 GB of finished files before embedding the first new slide."""

from __future__ import annotations

import os

import numpy as np
import pytest

from napari_pathdistill.inference.cohort import CohortOptions, embed_one


@pytest.fixture(scope="module")
def model(saved_tiny_vit):
    return saved_tiny_vit


def _opts(out, **kw) -> CohortOptions:
    return CohortOptions(
        model="unused", out_dir=str(out), mpp=4.0, min_tissue=0.0, formats=("h5", "plism"), **kw
    )


def _identity(path) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_ino, st.st_mtime_ns


def test_a_kept_slide_keeps_its_plism_copy(cmu_svs, model, tmp_path) -> None:
    first = embed_one(cmu_svs, model, _opts(tmp_path))
    assert first.ok and not first.skipped, first.error
    h5, npy = map(os.fspath, first.outputs)
    before, rows = _identity(npy), np.load(npy)
    again = embed_one(cmu_svs, model, _opts(tmp_path))
    assert again.ok and again.skipped and again.outputs == first.outputs
    assert _identity(npy) == before  # not written again (an atomic rewrite is a new file)
    np.testing.assert_array_equal(np.load(npy), rows)
    assert rows.shape[0] > 0 and os.path.getsize(h5) > 0


def test_a_plism_copy_that_is_not_the_kept_hdf5_s_is_rewritten(cmu_svs, model, tmp_path) -> None:
    first = embed_one(cmu_svs, model, _opts(tmp_path))
    npy = first.outputs[1]
    rows = np.load(npy)
    np.save(npy, rows[:-1])  # another shape (e.g. an older embedding's copy), newer than the HDF5
    assert embed_one(cmu_svs, model, _opts(tmp_path)).skipped
    np.testing.assert_array_equal(np.load(npy), rows)
    other = rows.copy()
    other[-1, 3:] += 1.0  # same shape, other last row
    np.save(npy, other)
    embed_one(cmu_svs, model, _opts(tmp_path))
    np.testing.assert_array_equal(np.load(npy), rows)
    # a recomputed HDF5 (--overwrite) is newer than the copy: the copy follows it
    before = _identity(npy)
    again = embed_one(cmu_svs, model, _opts(tmp_path, overwrite=True))
    assert again.ok and not again.skipped
    assert _identity(npy) != before
    np.testing.assert_array_equal(np.load(npy), rows)
