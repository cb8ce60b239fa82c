"""``pathdistill embed --slide-timeout`` stopped by Ctrl-C or SIGTERM while its child process embeds a slide.

The child must stop like the in-process path does: write the rows embedded since the last chunk, release the
slide's lock and exit without a traceback, whether the signal reaches the whole process group (Ctrl-C in a
terminal) or the parent alone (``kill PID``, a batch scheduler's stop), and a rerun must finish the slide with
the features of an uninterrupted run.

The stall is real: a ``sitecustomize`` on PYTHONPATH makes the child's model sleep (interruptibly) after
``STALL_AFTER`` batches, once it has written a marker file, so the signal lands mid-slide with embedded rows
not yet flushed (``chunk_batches`` is 4).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from _fresh_process import python_env
from napari_pathdistill.inference.embed import embed_slide
from napari_pathdistill.models.checkpoint import save_checkpoint
from napari_pathdistill.models.factory import load_model
from napari_pathdistill.models.testing import tiny_model

STALL = """
import os
if os.environ.get("PATHDISTILL_TEST_STALL_MARKER"):
    import time
    from pathlib import Path

    from napari_pathdistill.models.embedding_model import EmbeddingModel

    _embed, _calls = EmbeddingModel.embed, []

    def embed(self, tiles):
        _calls.append(1)
        if len(_calls) > int(os.environ["PATHDISTILL_TEST_STALL_AFTER"]):
            Path(os.environ["PATHDISTILL_TEST_STALL_MARKER"]).write_text(str(os.getpid()))
            time.sleep(600)
        return _embed(self, tiles)

    EmbeddingModel.embed = embed
"""
STALL_AFTER, BATCH = 3, 2  # 6 rows embedded, none flushed yet (a chunk is 4 batches)
#: 56 px tiles at 4 um/px, every grid tile: 24 tiles of CMU-1-Small-Region
TILES = ["--mpp", "4", "--min-tissue", "0", "--batch-size", str(BATCH), "--device", "cpu"]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    model = tiny_model("vit")
    return save_checkpoint(model.module, model.spec, tmp_path_factory.mktemp("ckpt"))


def _start(ckpt: Path, slide: Path, out: Path, tmp_path: Path, stall: bool) -> tuple[subprocess.Popen, Path]:
    """``pathdistill embed --slide-timeout 600`` in a new session (its own process group, as a terminal's job)."""
    site, marker = tmp_path / "site", tmp_path / "stalled"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(STALL)
    marker.unlink(missing_ok=True)
    env = {"PATHDISTILL_TEST_STALL_MARKER": str(marker), "PATHDISTILL_TEST_STALL_AFTER": str(STALL_AFTER)}
    cmd = [sys.executable, "-m", "napari_pathdistill.cli.main", "embed", str(slide), "--model", str(ckpt),
           "--out", str(out), *TILES, "--slide-timeout", "600"]  # fmt: skip
    proc = subprocess.Popen(cmd, env=python_env([site], **(env if stall else {})), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)  # fmt: skip
    return proc, marker


def _stop_mid_slide(proc: subprocess.Popen, marker: Path, signum: int, group: bool) -> tuple[int, str]:
    """Wait until the child stalls, send ``signum`` to the process group or the parent alone; (rc, stderr)."""
    deadline = time.monotonic() + 300
    while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert marker.exists(), proc.communicate(timeout=60)[1][-3000:]
    (os.killpg if group else os.kill)(proc.pid, signum)
    try:
        _, err = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail(f"pathdistill embed did not stop after signal {signum}:\n{proc.communicate()[1][-3000:]}")
    with pytest.raises(ProcessLookupError):  # the slide's child (pid in the marker) is gone with its parent
        os.kill(int(marker.read_text()), 0)
    return proc.returncode, err


def _assert_rows_kept(out: Path, err: str) -> None:
    partial = out / "CMU-1-Small-Region.h5.partial"
    with h5py.File(partial) as f:
        assert int(f.attrs["done"]) == STALL_AFTER * BATCH, err  # the unflushed rows were written
    assert not list(out.glob("*.lock")), err
    assert "Traceback" not in err, err


@pytest.mark.parametrize(("signum", "group", "rc", "line"), [
    (signal.SIGINT, True, 130, "interrupted"),  # Ctrl-C: the terminal signals the parent and the child
    (signal.SIGTERM, False, 143, "terminated"),  # kill PID of the parent only
])  # fmt: skip
def test_a_stopped_slide_child_keeps_its_rows_quietly_and_the_rerun_finishes(
    ckpt: Path, cmu_svs: Path, tmp_path: Path, signum: int, group: bool, rc: int, line: str
) -> None:
    out = tmp_path / "out"
    proc, marker = _start(ckpt, cmu_svs, out, tmp_path, stall=True)
    code, err = _stop_mid_slide(proc, marker, signum, group)
    assert code == rc, err
    assert err.strip().splitlines()[-1].split("\r")[-1].strip() == line, err
    _assert_rows_kept(out, err)
    if signum != signal.SIGTERM:
        return
    proc, _ = _start(ckpt, cmu_svs, out, tmp_path, stall=False)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    reference = embed_slide(cmu_svs, load_model(str(ckpt), device="cpu"), tmp_path / "reference", mpp=4,
                            min_tissue=0, batch_size=BATCH)  # fmt: skip
    with h5py.File(reference) as a, h5py.File(out / "CMU-1-Small-Region.h5") as b:
        assert len(b["coords"]) == 24
        np.testing.assert_array_equal(a["coords"][()], b["coords"][()])
        np.testing.assert_array_equal(a["features"][()], b["features"][()])
