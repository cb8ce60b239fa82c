"""``pathdistill embed --format h5,clam``: the CLI prints CLAM's two files of each slide and lists them in
``embed_summary.csv`` beside the HDF5, also for a slide kept on a rerun (whose copies are not written again)."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import pytest

from napari_pathdistill.cli.main import main
from napari_pathdistill.models.checkpoint import save_checkpoint
from napari_pathdistill.models.testing import tiny_model

FAST = ["--mpp", "4", "--min-tissue", "0", "--device", "cpu"]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    model = tiny_model("vit")
    return save_checkpoint(model.module, model.spec, tmp_path_factory.mktemp("ckpt"))


def _row(out: Path) -> dict[str, str]:
    with (out / "embed_summary.csv").open(newline="") as fh:
        [row] = list(csv.DictReader(fh))
    return row


def test_clam_files_are_printed_and_summarised(ckpt, cmu_svs, tmp_path, capsys) -> None:
    out = tmp_path / "out"
    args = ["embed", str(cmu_svs), "--model", str(ckpt), "--out", str(out), *FAST, "--format", "clam,h5"]
    assert main(args) == 0
    files = [str(out / "CMU-1-Small-Region.h5"), str(out / "h5_files" / "CMU-1-Small-Region.h5"),
             str(out / "pt_files" / "CMU-1-Small-Region.pt")]  # fmt: skip
    assert capsys.readouterr().out.split() == files
    row = _row(out)
    assert row["status"] == "embedded" and row["outputs"].split() == files and row["tiles"] == "24"
    before = [os.stat(p).st_mtime_ns for p in files]
    assert main(args) == 0
    assert capsys.readouterr().out.split() == files
    row = _row(out)
    assert row["status"] == "kept" and row["outputs"].split() == files
    assert [os.stat(p).st_mtime_ns for p in files] == before  # nothing written again
