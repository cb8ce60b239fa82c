"""``pathdistill embed`` under a file-size limit (``ulimit -f``, a batch scheduler's RLIMIT_FSIZE) too small for
a slide's output: one ``FAILED`` line naming the limit, before any tile is embedded, and no lock left behind.

Was (found running the bundled student on CMU-1-Small-Region under ``ulimit -f 100``): the partial file fit, the
PCA / k-means summary written after the last row did not (``posix_fallocate`` failing with EFBIG was taken for a
file system without it), and the run ended in h5py's deallocation tracebacks and a segmentation fault, its lock
left behind. The limit is real here: the CLI runs in a fresh process that sets it on itself."""

from __future__ import annotations

import resource

import pytest

from _fresh_process import run_code
from napari_pathdistill.inference.embed import embed_slide
from napari_pathdistill.models.checkpoint import save_checkpoint
from napari_pathdistill.models.factory import load_model
from napari_pathdistill.models.testing import tiny_model

LIMITED_EMBED = """
    import resource, sys
    from napari_pathdistill.cli.main import main

    limit = int(sys.argv[1])
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    sys.exit(main(["embed", *sys.argv[2:], "--mpp", "4", "--min-tissue", "0", "--device", "cpu"]))
    """


@pytest.mark.skipif(
    resource.getrlimit(resource.RLIMIT_FSIZE)[1] != resource.RLIM_INFINITY, reason="a file-size limit is set"
)
def test_an_output_larger_than_the_file_size_limit_is_refused_in_one_line(cmu_svs, tmp_path) -> None:
    model = tiny_model("vit")
    ckpt = save_checkpoint(model.module, model.spec, tmp_path / "ckpt")
    complete = embed_slide(cmu_svs, load_model(str(ckpt), device="cpu"), tmp_path / "unlimited", mpp=4,
                           min_tissue=0)  # fmt: skip
    limit = complete.stat().st_size - 1  # the rows fit, the whole file does not
    out = tmp_path / "out"
    proc = run_code(LIMITED_EMBED, str(limit), str(cmu_svs), "--model", str(ckpt), "--out", str(out),
                    returncode=None)  # fmt: skip
    err = proc.stderr
    assert proc.returncode == 1, err
    failed = [line for line in err.replace("\r", "\n").splitlines() if "FAILED" in line]
    assert len(failed) == 1 and "file-size limit" in failed[0] and "ulimit -f" in failed[0], err
    assert "Traceback" not in err and "Exception ignored" not in err, err
    assert (
        not list(out.glob("*.lock"))
        and not list(out.glob("*.partial"))
        and not (out / complete.name).exists()
    )
