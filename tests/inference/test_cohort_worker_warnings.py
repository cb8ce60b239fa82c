"""A slide's warnings on a dask worker (``pathdistill embed --workers``) reach the user once, as the serial path
says them: ``WARNING SLIDE: ...`` from the outcome, not also Python's own ``file:line: NoMPPWarning: ...`` and
source line, which every worker process printed (found embedding the TCGA slide without an MPP on 2 workers)."""

from __future__ import annotations

import pytest

from _wsi_files import write_pyramid_tiff
from napari_pathdistill.cli.main import main
from napari_pathdistill.models.checkpoint import save_checkpoint
from napari_pathdistill.models.testing import tiny_model

pytest.importorskip("distributed")


def test_a_worker_reports_a_slide_without_mpp_once_in_the_cli_s_words(cmu_rgb, tmp_path, capfd) -> None:
    model = tiny_model("vit")
    ckpt = save_checkpoint(model.module, model.spec, tmp_path / "ckpt")
    slide = tmp_path / "no-mpp.tif"
    write_pyramid_tiff(slide, cmu_rgb[:560, :560], mpp=None, levels=1)  # 100 tiles of 56 level-0 px
    out = tmp_path / "out"
    rc = main(["embed", str(slide), "--model", str(ckpt), "--out", str(out), "--min-tissue", "0", "--device",
               "cpu", "--workers", "1"])  # fmt: skip
    err = capfd.readouterr().err  # the worker process writes to the same file descriptor
    assert rc == 0, err
    assert err.count(f"WARNING {slide}: slide has no MPP: tiles are 56 level-0 px") == 1, err
    assert "NoMPPWarning" not in err and "embed_slide(" not in err, err
    assert (out / "no-mpp.h5").is_file()
