"""``pathdistill embed`` records each slide's outcome in ``<out>/embed_summary.csv``: which slides were embedded,
kept or failed and why, one row per slide across reruns, the slides finished before a Ctrl-C included.

Was (found running a mixed cohort of real slides, a truncated SVS and a text file): the only record of what failed
and why was the terminal's stderr, between tqdm bars; a cohort run under a batch scheduler, or resumed after
Ctrl-C, left no list of its failed slides beside the outputs."""

from __future__ import annotations

import csv
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import pytest

from _fresh_process import python_env
from napari_pathdistill.cli.main import main
from napari_pathdistill.models.checkpoint import save_checkpoint
from napari_pathdistill.models.testing import tiny_model

FAST = ["--mpp", "4", "--mpp-override", "0.25", "--min-tissue", "0", "--device", "cpu"]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    model = tiny_model("vit")
    return save_checkpoint(model.module, model.spec, tmp_path_factory.mktemp("ckpt"))


def _rows(out: Path) -> dict[str, dict[str, str]]:
    with (out / "embed_summary.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len({r["slide"] for r in rows}) == len(rows), rows  # one row per slide
    return {Path(r["slide"]).name: r for r in rows}


def _tiles(h5: Path) -> str:
    with h5py.File(h5) as f:
        return str(len(f["coords"]))


def test_each_slide_s_outcome_is_a_row_and_reruns_update_it(
    ckpt, cmu_svs, tcga_svs, tmp_path, capsys
) -> None:
    truncated = tmp_path / "truncated.svs"
    truncated.write_bytes(cmu_svs.read_bytes()[:300_000])
    notes = tmp_path / "notes.txt"
    notes.write_text("not a slide")
    out = tmp_path / "out"
    args = ["--model", str(ckpt), "--out", str(out), *FAST]
    assert main(["embed", str(cmu_svs), str(truncated), str(notes), *args]) == 1
    assert f"summary: {out / 'embed_summary.csv'}" in capsys.readouterr().err
    rows = _rows(out)
    assert set(rows) == {"CMU-1-Small-Region.svs", "truncated.svs", "notes.txt"}
    cmu = rows["CMU-1-Small-Region.svs"]
    assert (
        cmu["status"] == "embedded"
        and cmu["error"] == ""
        and cmu["outputs"] == str(out / "CMU-1-Small-Region.h5")
    )
    assert cmu["tiles"] == _tiles(out / "CMU-1-Small-Region.h5") and cmu["slide"] == str(cmu_svs.absolute())
    assert (
        rows["truncated.svs"]["status"] == "failed"
        and "truncated or corrupt" in rows["truncated.svs"]["error"]
    )
    assert rows["notes.txt"]["status"] == "failed" and "not a whole-slide image" in rows["notes.txt"]["error"]
    assert rows["notes.txt"]["tiles"] == rows["notes.txt"]["outputs"] == ""
    # a rerun: the kept slide's row is updated in place, a new slide added, the failed ones of the first run kept
    truncated.write_bytes(cmu_svs.read_bytes())  # "copied again": now it embeds
    assert main(["embed", str(cmu_svs), str(truncated), str(tcga_svs), *args]) == 0
    rows = _rows(out)
    assert list(rows) == [
        "CMU-1-Small-Region.svs",
        "truncated.svs",
        "notes.txt",
        "tcga-cr-7395-01a-01-ts1.svs",
    ]
    assert rows["CMU-1-Small-Region.svs"]["status"] == "kept"
    assert rows["truncated.svs"]["status"] == "embedded" and rows["truncated.svs"]["error"] == ""
    assert rows["notes.txt"]["status"] == "failed"
    tcga = rows["tcga-cr-7395-01a-01-ts1.svs"]
    assert tcga["status"] == "embedded" and tcga["tiles"] == _tiles(out / "tcga-cr-7395-01a-01-ts1.h5")


def test_slides_finished_before_ctrl_c_are_in_the_summary(ckpt, cmu_svs, tcga_svs, tmp_path) -> None:
    out = tmp_path / "out"
    # the TCGA slide as ~5,000 tiles of 56 px at 0.25 um/px in batches of 4: still running when interrupted
    cmd = [sys.executable, "-m", "napari_pathdistill.cli.main", "embed", str(cmu_svs), str(tcga_svs), "--model",
           str(ckpt), "--out", str(out), "--mpp", "0.25", "--mpp-override", "0.25", "--min-tissue", "0",
           "--batch-size", "4", "--device", "cpu"]  # fmt: skip
    proc = subprocess.Popen(cmd, env=python_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        while not (out / "tcga-cr-7395-01a-01-ts1.h5.partial").exists() and proc.poll() is None:
            assert time.monotonic() < deadline, "the second slide never started"
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130 and err.strip().splitlines()[-1] == "interrupted", err
    assert not (out / "tcga-cr-7395-01a-01-ts1.h5").exists()
    rows = _rows(out)
    assert list(rows) == ["CMU-1-Small-Region.svs"] and rows["CMU-1-Small-Region.svs"]["status"] == "embedded"


def test_two_runs_into_one_folder_keep_each_other_s_rows(tmp_path) -> None:
    """Two ``pathdistill embed`` processes may share an --out folder (per-slide locks); each summary write used to
    replace the file with that run's rows and those it read at its start, dropping the other run's."""
    from napari_pathdistill.cli._embed_summary import EmbedSummary
    from napari_pathdistill.inference.cohort_slide import SlideOutcome

    first, second = EmbedSummary(tmp_path), EmbedSummary(tmp_path)
    first.add(SlideOutcome(str(tmp_path / "a.svs"), (str(tmp_path / "a.h5"),), tiles=3))
    second.add(SlideOutcome(str(tmp_path / "b.svs"), error="WSIError: truncated"))
    assert first.write() and second.write()
    first.add(SlideOutcome(str(tmp_path / "c.svs"), (str(tmp_path / "c.h5"),), tiles=5))
    first.write()
    rows = _rows(tmp_path)
    assert {k: v["status"] for k, v in rows.items()} == {
        "a.svs": "embedded",
        "b.svs": "failed",
        "c.svs": "embedded",
    }
