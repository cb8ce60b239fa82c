"""``--format clam``'s two files are written whole or not at all: a write that fails part-way (full disk, file-size
limit) leaves neither a truncated ``h5_files/<slide>.h5`` nor a ``pt_files/<slide>.pt`` (which CLAM's
``extract_features_fp`` would take as a finished slide), and says in one line why. The failure is real: a fresh
process sets a file-size limit on itself that the HDF5, embedded earlier without it, need not meet but the copies
do. Unchecked (measured while writing this), HDF5 failed at its close with "RuntimeError: Set slist enabled failed
(file write failed: ... errno = 27 ...)" or only printed that its write failed ("Exception ignored in ...
ObjectID.__dealloc__") and left a cut file, and ``torch.save`` to a path said "RuntimeError: basic_ios::clear:
iostream error"."""

from __future__ import annotations

import os
import resource

import numpy as np
import pytest
import torch

from _fresh_process import run_code
from napari_pathdistill.inference.clam_output import write_clam
from napari_pathdistill.inference.embed import embed_slide
from napari_pathdistill.models.checkpoint import save_checkpoint
from napari_pathdistill.models.factory import load_model
from napari_pathdistill.models.testing import tiny_model

LIMITED_EMBED = """
    import resource, sys
    from napari_pathdistill.cli.main import main

    limit = int(sys.argv[1])
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    sys.exit(main(["embed", *sys.argv[2:], "--mpp", "4", "--min-tissue", "0", "--device", "cpu",
                   "--format", "h5,clam"]))
    """


def _failed(err: str) -> str:
    failed = [line for line in err.replace("\r", "\n").splitlines() if "FAILED" in line]
    assert len(failed) == 1 and "Traceback" not in err, err
    return failed[0]


@pytest.mark.skipif(
    resource.getrlimit(resource.RLIMIT_FSIZE)[1] != resource.RLIM_INFINITY, reason="a file-size limit is set"
)
def test_clam_copies_that_cannot_be_written_leave_no_file(cmu_svs, tmp_path) -> None:
    model = tiny_model("vit")
    ckpt = save_checkpoint(model.module, model.spec, tmp_path / "ckpt")
    out = tmp_path / "out"
    h5 = embed_slide(cmu_svs, load_model(str(ckpt), device="cpu"), out, mpp=4, min_tissue=0)
    want_h5, want_pt = write_clam(h5, tmp_path / "unlimited")  # the sizes the copies need
    mtime = h5.stat().st_mtime_ns
    embed = [str(cmu_svs), "--model", str(ckpt), "--out", str(out)]
    h5_copy, pt = out / "h5_files" / want_h5.name, out / "pt_files" / want_pt.name
    # refused before HDF5 writes (it may hit the limit at its close and only print that): its arrays' bytes fit
    proc = run_code(LIMITED_EMBED, str(want_h5.stat().st_size - 1), *embed, returncode=1)
    failed = _failed(proc.stderr)
    assert f"cannot write {h5_copy} (" in failed and "pass the file-size limit of" in failed, failed
    assert "ulimit -f" in failed and "CMU-1-Small-Region.h5 is kept" in failed
    assert "Exception ignored" not in proc.stderr
    assert os.listdir(h5_copy.parent) == [] and not pt.parent.exists()  # no copy, no temporary file
    assert h5.stat().st_mtime_ns == mtime  # the HDF5 is kept as it was
    run_code(LIMITED_EMBED, str(resource.RLIM_INFINITY), *embed)
    kept = os.stat(h5_copy).st_ino
    pt.unlink()  # the .pt alone is missing (written last): the HDF5 copy is kept, the .pt cannot be written
    proc = run_code(LIMITED_EMBED, str(want_pt.stat().st_size - 1), *embed, returncode=1)
    assert f"cannot write {pt} (" in _failed(proc.stderr) and "pass the file-size limit" in proc.stderr
    assert os.listdir(pt.parent) == [] and os.stat(h5_copy).st_ino == kept
    run_code(LIMITED_EMBED, str(resource.RLIM_INFINITY), *embed)
    assert os.stat(h5_copy).st_ino == kept
    np.testing.assert_array_equal(
        torch.load(pt, weights_only=True).numpy(), torch.load(want_pt, weights_only=True).numpy()
    )


def test_an_hdf5_copy_cut_short_is_not_taken_as_written(tmp_path) -> None:
    """The last guard of ``_write_h5``: a file HDF5 did not finish (cut at its end, as a write at the close that
    h5py only prints leaves it) raises, so it is not renamed into place."""
    import h5py

    from napari_pathdistill.inference.clam_output import _read_back

    rows, xy = (
        np.arange(24 * 48, dtype=np.float32).reshape(24, 48),
        np.arange(48, dtype=np.int32).reshape(24, 2),
    )
    path = tmp_path / "s.h5"
    with h5py.File(path, "w") as f:
        f["features"], f["coords"] = rows, xy
    _read_back(path, rows, xy)  # whole: no error
    with pytest.raises(OSError, match="does not read back whole"):
        _read_back(path, rows[:, ::-1].copy(), xy)  # other rows
    os.truncate(path, path.stat().st_size - 100)
    with pytest.raises(OSError, match="does not read back whole"):
        _read_back(path, rows, xy)
