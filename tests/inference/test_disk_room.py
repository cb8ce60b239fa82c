"""A disk that fills up after the rows are embedded, while the finished file is written (its PCA / k-means summary,
its ``skipped_coords``): one clear error, the rows kept, and a rerun that finishes without embedding again.

Was (a 20 MB tmpfs filled just before the summary): h5py's deallocation tracebacks, then a segmentation fault with
the lock left behind. The blocks of those last writes are now reserved first (``inference.disk_room``)."""

from __future__ import annotations

import errno
import os

import h5py
import numpy as np
import pytest

from napari_pathdistill.errors import PathDistillError
from napari_pathdistill.inference.embed import embed_slide
from napari_pathdistill.models.testing import tiny_model

KW = {"mpp": 4.0, "min_tissue": 0.0, "batch_size": 8}  # 24 tiles of the tiny ViT


def _full_past_the_rows(monkeypatch) -> list[int]:
    """``posix_fallocate`` fails with ENOSPC for blocks past the start of a file (the partial's own rows, reserved
    from offset 0 when it is created, still fit): a disk that fills up once every row is written."""
    real, refused = os.posix_fallocate, []

    def full(fd: int, offset: int, length: int) -> None:
        if offset > 0:
            refused.append(length)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(fd, offset, length)

    monkeypatch.setattr(os, "posix_fallocate", full)
    return refused


@pytest.mark.skipif(not hasattr(os, "posix_fallocate"), reason="no fallocate on this OS")
@pytest.mark.parametrize("map_k", [8, None])
def test_a_disk_full_at_the_last_writes_keeps_the_rows(cmu_svs, tmp_path, monkeypatch, map_k) -> None:
    model = tiny_model("vit")
    refused = _full_past_the_rows(monkeypatch)
    with pytest.raises(PathDistillError, match=r"no space left in .* to finish .*24 embedded rows are kept"):
        embed_slide(cmu_svs, model, tmp_path, map_k=map_k, **KW)
    assert refused
    partial = tmp_path / "CMU-1-Small-Region.h5.partial"
    assert not (tmp_path / "CMU-1-Small-Region.h5").exists()
    assert not (tmp_path / "CMU-1-Small-Region.h5.lock").exists()
    with h5py.File(partial) as f:
        assert int(f.attrs["done"]) == 24
        rows = f["features"][()]
    monkeypatch.undo()  # space freed: the rerun finishes the file from the kept rows
    monkeypatch.setattr(model, "embed", None)  # nothing is embedded again (a call would raise TypeError)
    out = embed_slide(cmu_svs, model, tmp_path, map_k=map_k, **KW)
    with h5py.File(out) as f:
        assert np.array_equal(f["features"][()], rows)
        assert ("map" in f) == bool(map_k)


def test_leaving_out_undecodable_rows_checks_the_space_of_the_copy(tmp_path, monkeypatch) -> None:
    """The rows of undecodable tiles are left out by copying the file: refused up front when the folder lacks the
    copy's room (the partial kept), done when it has it."""
    from collections import namedtuple

    from napari_pathdistill.inference import disk_room
    from napari_pathdistill.inference.outputs import finish_output

    partial, out = tmp_path / "s.h5.partial", tmp_path / "s.h5"
    with h5py.File(partial, "w") as f:
        f["coords"] = np.arange(20, dtype=np.int64).reshape(10, 2)
        f["features"] = np.arange(10 * 4, dtype=np.float32).reshape(10, 4)
        f["skipped_rows"] = np.array([3], np.int64)
        f.attrs["done"] = 10
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(disk_room.shutil, "disk_usage", lambda _p: usage(1 << 30, 1 << 30, 4096))
    with pytest.raises(PathDistillError, match=r"\(0\.3 MB more needed\): its 10 embedded rows are kept"):
        finish_output(partial, out)
    assert partial.exists() and not out.exists() and not out.with_name("s.h5.tmp").exists()
    monkeypatch.undo()
    assert finish_output(partial, out) == 1
    with h5py.File(out) as f:
        assert np.array_equal(
            f["features"][()], np.delete(np.arange(40, dtype=np.float32).reshape(10, 4), 3, 0)
        )
