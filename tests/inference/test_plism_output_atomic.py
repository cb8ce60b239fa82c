"""``--format plism``'s ``features.npy`` is written whole or not at all: a write that fails part-way (full disk,
file-size limit, Ctrl-C) leaves no truncated file for plismbench to glob and fail on, and says in one line why.

Was (found adding ``--format h5,plism`` to a folder of kept embeddings on a 150 KB tmpfs): ``FAILED SLIDE:
OSError: 22815 requested and 12256 written`` and a 49 KB ``features.npy`` of 89 KB that ``np.load`` refuses
("file seems not fully written?"); under a file-size limit ``np.save`` even cut the file short without an error,
exit code 0. The failure is real here: a fresh process sets a file-size limit on itself that the HDF5, embedded
earlier without it, needs not meet but the plismbench copy does."""

from __future__ import annotations

import resource

import numpy as np
import pytest

from _fresh_process import run_code
from napari_pathdistill.inference.embed import embed_slide, write_plism
from napari_pathdistill.models.checkpoint import save_checkpoint
from napari_pathdistill.models.factory import load_model
from napari_pathdistill.models.testing import tiny_model

LIMITED_EMBED = """
    import resource, sys
    from napari_pathdistill.cli.main import main

    limit = int(sys.argv[1])
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    sys.exit(main(["embed", *sys.argv[2:], "--mpp", "4", "--min-tissue", "0", "--device", "cpu",
                   "--format", "h5,plism"]))
    """


@pytest.mark.skipif(
    resource.getrlimit(resource.RLIMIT_FSIZE)[1] != resource.RLIM_INFINITY, reason="a file-size limit is set"
)
def test_a_plism_copy_that_cannot_be_written_leaves_no_truncated_file(cmu_svs, tmp_path) -> None:
    model = tiny_model("vit")
    ckpt = save_checkpoint(model.module, model.spec, tmp_path / "ckpt")
    out = tmp_path / "out"
    h5 = embed_slide(cmu_svs, load_model(str(ckpt), device="cpu"), out, mpp=4, min_tissue=0)
    npy = write_plism(h5, tmp_path / "unlimited")  # the size the copy needs
    mtime = h5.stat().st_mtime_ns
    proc = run_code(LIMITED_EMBED, str(npy.stat().st_size - 1), str(cmu_svs), "--model", str(ckpt), "--out",
                    str(out), returncode=None)  # fmt: skip
    err = proc.stderr
    assert proc.returncode == 1, err
    assert h5.is_file() and h5.stat().st_mtime_ns == mtime  # the HDF5 is kept as it was
    target = out / "tiny-vit" / "CMU-1-Small-Region_to_GMH_S60.tif"
    failed = [line for line in err.replace("\r", "\n").splitlines() if "FAILED" in line]
    assert len(failed) == 1 and f"cannot write {target / 'features.npy'}" in failed[0], err
    assert "ulimit -f" in failed[0] and "CMU-1-Small-Region.h5 is kept" in failed[0], err
    assert "Traceback" not in err, err
    assert sorted(p.name for p in target.iterdir()) == []  # neither a truncated copy nor its temporary file
    # without the limit the copy is whole and equal to the one written directly
    rerun = run_code(LIMITED_EMBED, str(resource.RLIM_INFINITY), str(cmu_svs), "--model", str(ckpt), "--out",
                     str(out))  # fmt: skip
    assert "FAILED" not in rerun.stderr
    np.testing.assert_array_equal(np.load(target / "features.npy"), np.load(npy))
