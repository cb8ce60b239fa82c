"""The resumable partial file (``inference.feature_writer.open_partial``) left by an interrupted run."""

from __future__ import annotations

import subprocess
import sys
from types import SimpleNamespace

import h5py
import numpy as np
import pytest

from napari_pathdistill.errors import PathDistillError
from napari_pathdistill.inference.feature_writer import open_partial
from napari_pathdistill.models.testing import tiny_model


@pytest.fixture(scope="module")
def model():
    return tiny_model("vit")


def _grid(n: int = 4) -> SimpleNamespace:
    coords = np.stack([np.arange(n) * 56, np.zeros(n, np.int64)], 1)
    return SimpleNamespace(coords=coords, tissue_fraction=np.ones(n, np.float32))


def _attrs(model) -> dict:
    return {"model": model.spec.name, "weights": model.weights_id, "min_tissue": 0.0}


def _partial_with_rows(path, model, grid, done: int = 2) -> None:
    with open_partial(path, model, grid, _attrs(model)) as f:
        f["features"][:done] = 1.0
        f.attrs["done"] = done


def test_a_matching_partial_is_resumed(model, tmp_path) -> None:
    partial, grid = tmp_path / "s.h5.partial", _grid()
    _partial_with_rows(partial, model, grid)
    with open_partial(partial, model, grid, _attrs(model)) as f:
        assert int(f.attrs["done"]) == 2 and np.all(f["features"][:2] == 1.0)


@pytest.mark.parametrize("damage", ["truncated", "garbage", "no features", "done past the end"])
def test_an_unreadable_partial_is_started_over(model, tmp_path, damage) -> None:
    """A process killed (or a disk filled up) while it wrote the partial file leaves one HDF5 cannot read:
    the rerun starts it over instead of failing with h5py's OSError on every rerun."""
    partial, grid = tmp_path / "s.h5.partial", _grid()
    _partial_with_rows(partial, model, grid)
    if damage == "truncated":
        with open(partial, "r+b") as fh:
            fh.truncate(partial.stat().st_size // 3)
    elif damage == "garbage":
        partial.write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(100))
    else:
        with h5py.File(partial, "a") as f:
            if damage == "no features":
                del f["features"]
            else:
                f.attrs["done"] = 99
    with open_partial(partial, model, grid, _attrs(model)) as f:
        assert int(f.attrs["done"]) == 0
        assert f["features"].shape == (len(grid.coords), model.dim)


def test_a_partial_open_in_another_program_is_one_clear_error(model, tmp_path) -> None:
    partial, grid = tmp_path / "s.h5.partial", _grid()
    _partial_with_rows(partial, model, grid)
    holder = subprocess.Popen(
        [sys.executable, "-c", f"import h5py, sys; f = h5py.File({str(partial)!r}, 'r'); print('open', "
         "flush=True); sys.stdin.read()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "open"
        with pytest.raises(PathDistillError, match="open in another program"):
            open_partial(partial, model, grid, _attrs(model))
    finally:
        holder.communicate("")
    assert partial.exists()  # kept: its rows are resumed once the other program closed it
    with open_partial(partial, model, grid, _attrs(model)) as f:
        assert int(f.attrs["done"]) == 2


class _Grid:
    """The part of a TileGrid ``write_rows`` uses."""

    def __init__(self, n: int) -> None:
        self.coords = np.stack([np.arange(n) * 56, np.zeros(n, np.int64)], 1)
        self.tissue_fraction = np.ones(n, np.float32)

    def __len__(self) -> int:
        return len(self.coords)

    def subset(self, _rows):
        return self


def test_ctrl_c_between_two_flushes_keeps_the_embedded_rows(model, tmp_path, monkeypatch) -> None:
    """Ctrl-C (or the CLI's SIGTERM) after 3 batches of a 4-batch chunk: those 3 batches are written, not lost."""
    from napari_pathdistill.inference import feature_writer

    def batches(*_args, **_kwargs):
        for b in range(3):
            yield 2 * b, np.full((2, model.dim), b + 1, np.float32)
        raise KeyboardInterrupt

    monkeypatch.setattr(feature_writer, "iter_batches", batches)
    partial, grid = tmp_path / "s.h5.partial", _Grid(16)
    with open_partial(partial, model, grid, _attrs(model)) as f, pytest.raises(KeyboardInterrupt):
        list(feature_writer.write_rows(f, model, None, grid, batch_size=2, chunk_batches=4))
    with h5py.File(partial) as f:
        assert int(f.attrs["done"]) == 6
        assert np.array_equal(f["features"][:6, 0], [1, 1, 2, 2, 3, 3])


def test_the_rows_disk_space_is_taken_when_the_partial_is_created(model, tmp_path) -> None:
    """HDF5 reports a row write that fails for a full disk only at close, after ``done`` counted the rows: the
    features' whole extent is allocated up front instead (on a 300 kB tmpfs, a 494-tile run wrote done=494 with
    121 rows of zeros, then segfaulted)."""
    partial, grid = tmp_path / "s.h5.partial", _grid(64)
    with open_partial(partial, model, grid, _attrs(model)) as f:
        assert f["features"].id.get_storage_size() == 64 * model.dim * 4


def test_a_full_disk_is_one_line_and_leaves_no_partial(model, tmp_path, monkeypatch) -> None:
    import errno
    import os

    def full(fd, offset, length):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "posix_fallocate", full, raising=False)
    partial = tmp_path / "s.h5.partial"
    with pytest.raises(PathDistillError, match=r"no space left in .* for s\.h5\.partial"):
        open_partial(partial, model, _grid(), _attrs(model))
    assert not partial.exists()
