"""``pathdistill embed --slide-timeout``: a slide that hangs is given up, the cohort goes on.

The hang is real: in the processes of these tests (through a ``sitecustomize`` on PYTHONPATH, which every
Python process, the slide's child included, imports at start) ``read_tiles`` of the slide named by
``PATHDISTILL_TEST_HANG_SLIDE`` blocks in a ``read`` system call on a pipe nobody writes to, which no thread
can interrupt. Only killing the process ends it.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import h5py
import pytest

from _fresh_process import run_python
from napari_pathdistill.inference.cohort import CohortOptions
from napari_pathdistill.inference.slide_process import SlideProcess
from napari_pathdistill.models.checkpoint import save_checkpoint
from napari_pathdistill.models.testing import tiny_model

HANG = """
import os
if os.environ.get("PATHDISTILL_TEST_HANG_SLIDE"):
    import napari_pathdistill.inference.batches as _embed  # the batch loop reads the tiles

    _read = _embed.read_tiles

    def read_tiles(pyramid, grid, indices):
        if pyramid.path.name == os.environ["PATHDISTILL_TEST_HANG_SLIDE"]:
            r, w = os.pipe()
            os.read(r, 1)  # blocks in the kernel for ever
        return _read(pyramid, grid, indices)

    _embed.read_tiles = read_tiles
"""
FAST = ["--mpp", "4", "--min-tissue", "0", "--device", "cpu"]
#: the per-slide limit of the hanging runs: the good slide (24 tiles of a tiny ViT, well under a second on an idle
#: CPU) must finish within it on a loaded CI machine too (at 5 s it once timed out beside a parallel test run)
LIMIT = 15


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    model = tiny_model("vit")
    return save_checkpoint(model.module, model.spec, tmp_path_factory.mktemp("ckpt"))


@pytest.fixture
def slides(tmp_path: Path, cmu_svs: Path) -> tuple[Path, Path]:
    """(hang.svs, ok.svs): links to CMU-1-Small-Region.svs."""
    for name in ("hang.svs", "ok.svs"):
        (tmp_path / name).symlink_to(cmu_svs)
    return tmp_path / "hang.svs", tmp_path / "ok.svs"


def _hang_site(tmp_path: Path) -> Path:
    """The folder of the ``sitecustomize`` that hangs the slide named by PATHDISTILL_TEST_HANG_SLIDE."""
    site = tmp_path / "site"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(HANG)
    return site


def _embed(
    slides, ckpt: Path, out: Path, tmp_path: Path, hang: str | None, *extra: str
) -> tuple[subprocess.CompletedProcess, float]:
    """``pathdistill embed`` in a process (and slide children) with the hanging ``sitecustomize`` on PYTHONPATH."""
    env = {"PATHDISTILL_TEST_HANG_SLIDE": hang} if hang else {}
    t0 = time.monotonic()
    proc = run_python("-m", "napari_pathdistill.cli.main", "embed", *slides, "--model", ckpt, "--out", out, *FAST,
                      *extra, env=env, paths=[_hang_site(tmp_path)], timeout=400, returncode=None)  # fmt: skip
    return proc, time.monotonic() - t0


def _check_outputs(out: Path, proc: subprocess.CompletedProcess) -> None:
    assert proc.returncode == 1, proc.stderr
    assert f"FAILED {out.parent / 'hang.svs'}: timed out after {LIMIT} s" in proc.stderr
    assert "hang.h5.partial (0 of 24 tiles) is kept: a rerun resumes it" in proc.stderr
    assert "1 of 2 slides failed" in proc.stderr
    with h5py.File(out / "ok.h5") as f:
        assert f.attrs["done"] == len(f["coords"]) == 24
    assert not list(out.glob("*.lock")) and not (out / "hang.h5").exists()


def test_a_hanging_slide_times_out_and_the_next_one_is_embedded(slides, ckpt: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc, _ = _embed(slides, ckpt, out, tmp_path, "hang.svs", "--slide-timeout", str(LIMIT))
    _check_outputs(out, proc)  # "timed out after 15 s": the limit ended it (the run's own bound is 400 s)
    proc, _ = _embed(slides, ckpt, out, tmp_path, None, "--slide-timeout", "60")  # no hang now
    assert proc.returncode == 0, proc.stderr
    assert "skipped" in proc.stderr and not (out / "hang.h5.partial").exists()  # ok.h5 kept, hang.h5 resumed
    with h5py.File(out / "hang.h5") as f:
        assert f.attrs["done"] == len(f["coords"]) == 24


def test_the_timeout_also_holds_on_a_dask_worker(slides, ckpt: Path, tmp_path: Path) -> None:
    pytest.importorskip("distributed")
    out = tmp_path / "out"
    proc, _ = _embed(slides, ckpt, out, tmp_path, "hang.svs", "--slide-timeout", str(LIMIT), "--workers", "1")
    _check_outputs(out, proc)


def test_slide_process_reports_a_model_that_cannot_load(tmp_path: Path, cmu_svs: Path) -> None:
    with SlideProcess(
        CohortOptions(model=str(tmp_path / "nowhere"), out_dir=str(tmp_path), device="cpu")
    ) as sp:
        outcome = sp.run(str(cmu_svs), timeout=60)
    assert not outcome.ok and "nowhere" in (outcome.error or "")
