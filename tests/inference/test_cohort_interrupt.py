"""``pathdistill embed --workers 2`` stopped by Ctrl-C, or by a batch scheduler's SIGTERM to every process of the
job, while both dask workers are mid-slide.

Like the serial path, the workers must write the rows they embedded since their last chunk and release the slides'
locks before the cluster closes, the CLI must end with ``interrupted`` (exit code 130; ``terminated``, 143, on
SIGTERM), no process of the job may be left, and a rerun must resume those rows and finish with the features of an
uninterrupted serial run. A second Ctrl-C quits without waiting.

The stall is real: a ``sitecustomize`` on PYTHONPATH makes the model of every process hold its
``STALL_AFTER + 1``-th batch (before computing it) after writing ``<pid>.rows`` (the rows it has embedded), until
the test writes ``go``; ``chunk_batches`` is 4, so none of those rows is flushed yet. The test sends SIGINT (as a
terminal's Ctrl-C does) or SIGTERM (as SLURM's scancel, preemption or time limit, or Kubernetes do) to the CLI's
process group, the dask workers included, waits until the CLI says it is stopping the workers (or exits), then
lets the models go on.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import pytest

from _fresh_process import python_env
from napari_pathdistill.cli.main import main
from napari_pathdistill.inference.cohort import CohortOptions, cohort_client, embed_one, iter_cohort
from napari_pathdistill.inference.embed import embed_slide
from napari_pathdistill.models.checkpoint import save_checkpoint
from napari_pathdistill.models.factory import load_model
from napari_pathdistill.models.testing import tiny_model

pytest.importorskip("distributed")

STALL = """
import os
if os.environ.get("PATHDISTILL_TEST_STALL_DIR"):
    import time
    from pathlib import Path

    from napari_pathdistill.models.embedding_model import EmbeddingModel

    _embed, _rows, _calls, _dir = EmbeddingModel.embed, [0], [0], Path(os.environ["PATHDISTILL_TEST_STALL_DIR"])

    def embed(self, tiles):
        _calls[0] += 1
        if _calls[0] == int(os.environ["PATHDISTILL_TEST_STALL_AFTER"]) + 1:
            (_dir / f"{os.getpid()}.rows").write_text(str(_rows[0]))
            while not (_dir / "go").exists():
                time.sleep(0.1)
        feats = _embed(self, tiles)
        _rows[0] += len(feats)
        return feats

    EmbeddingModel.embed = embed
"""
STALL_AFTER, BATCH = 2, 2  # 4 rows embedded per slide, none flushed (a chunk is 4 batches)
#: 56 px tiles at 4 um/px, every grid tile: 24 tiles of CMU-1-Small-Region, 63 of the TCGA slide (0.5 um/px given)
TILES = ["--mpp", "4", "--mpp-override", "0.5", "--min-tissue", "0", "--batch-size", str(BATCH),
         "--device", "cpu"]  # fmt: skip
WAIT = 300.0  # seconds any one step may take on a loaded machine (worker start-up included)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    model = tiny_model("vit")
    return save_checkpoint(model.module, model.spec, tmp_path_factory.mktemp("ckpt"))


class Embed:
    """``pathdistill embed --workers 2`` in a session of its own (a terminal's job), its stderr read as it comes."""

    def __init__(
        self, ckpt: Path, slides: list[Path], out: Path, stall: Path | None, extra: tuple[str, ...] = ()
    ) -> None:
        env = {} if stall is None else {"PATHDISTILL_TEST_STALL_DIR": str(stall),
                                        "PATHDISTILL_TEST_STALL_AFTER": str(STALL_AFTER)}  # fmt: skip
        if stall is not None:
            (stall / "site").mkdir(parents=True, exist_ok=True)
            (stall / "site" / "sitecustomize.py").write_text(STALL)
        cmd = [sys.executable, "-m", "napari_pathdistill.cli.main", "embed", *map(str, slides), "--model",
               str(ckpt), "--out", str(out), *TILES, "--workers", "2", *extra]  # fmt: skip
        paths = [] if stall is None else [stall / "site"]
        self.proc = subprocess.Popen(cmd, env=python_env(paths, **env), stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True, start_new_session=True)  # fmt: skip
        self.err: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.err.append(line)

    @property
    def stderr(self) -> str:
        return "".join(self.err)

    def wait_for(self, what: str, done: Callable[[], bool]) -> None:
        """Wait until ``done()`` or the CLI exits; fails the test when neither comes within :data:`WAIT`."""
        deadline = time.monotonic() + WAIT
        while not done() and self.proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert done() or self.proc.poll() is not None, f"no {what} within {WAIT:g} s:\n{self.stderr[-3000:]}"

    def finish(self) -> tuple[int, str]:
        """Wait for the exit (killed and failed after :data:`WAIT`); (exit code, stderr)."""
        try:
            self.proc.wait(WAIT)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"pathdistill embed did not stop:\n{self.stderr[-3000:]}")
        self._reader.join(60)
        return self.proc.returncode, self.stderr

    def kill(self) -> None:
        """SIGKILL what is left of the CLI's process group (the CLI, dask workers it left behind)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(60)


def _running(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie, left unreaped by a container's init, does not)."""
    if not Path("/proc/self/stat").exists():  # no procfs: ask the kernel
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _group_left(pgid: int) -> list[str]:
    """The running processes of process group ``pgid``, as ``pid: command line`` (via procfs; [] without it), once
    they are gone or after :data:`WAIT` (the CLI's exit does not wait for, e.g., multiprocessing's resource tracker
    to see its pipes closed)."""
    deadline = time.monotonic() + WAIT
    while (left := _group(pgid)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return left


def _group(pgid: int) -> list[str]:
    left = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) == pgid and fields[0] != "Z":
                cmd = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                left.append(f"{stat.parent.name}: {cmd}")
    return left


def _last_line(err: str) -> str:
    return err.strip().splitlines()[-1].split("\r")[-1].strip()


def _stall_until_both_workers_hold_rows(job: Embed, stall: Path) -> dict[str, int]:
    """Wait until both workers' models are stalled; the rows each reported, by pid."""
    job.wait_for("two stalled workers", lambda: len(list(stall.glob("*.rows"))) == 2)
    assert job.proc.poll() is None, job.stderr[-3000:]
    return {p.stem: int(p.read_text()) for p in stall.glob("*.rows")}


@pytest.mark.slow
@pytest.mark.parametrize("extra", [(), ("--slide-timeout", "600")], ids=["in-worker", "slide-process"])
@pytest.mark.parametrize(
    ("signum", "code", "last"),
    [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated")],
    ids=["ctrl-c", "sigterm-to-all"],
)
def test_ctrl_c_stops_the_workers_with_their_rows_kept_and_the_rerun_resumes(
    ckpt: Path,
    cmu_svs: Path,
    tcga_svs: Path,
    tmp_path: Path,
    extra: tuple[str, ...],
    signum: int,
    code: int,
    last: str,
) -> None:
    """With ``--slide-timeout`` each worker's slide runs in its child process, which the worker stops.

    SIGTERM reaches the worker processes too (a batch scheduler signals the whole job): each worker stops its slide
    as the driver's stop would (before, the workers died at once, losing their unflushed rows, leaving their locks).
    """
    slides, out, stall = [cmu_svs, tcga_svs], tmp_path / "out", tmp_path / "stall"
    job = Embed(ckpt, slides, out, stall, extra)
    try:
        reported = _stall_until_both_workers_hold_rows(job, stall)
        assert sorted(reported.values()) == [STALL_AFTER * BATCH] * 2
        os.killpg(job.proc.pid, signum)
        job.wait_for("'stopping' line", lambda: "stopping" in job.stderr)
        if "stopping" in job.stderr:  # the workers were told: let the models go on
            (stall / "go").write_text("")
        rc, err = job.finish()
        # the stalled processes (workers, or their slide processes) ended with the CLI, not orphaned mid-slide
        assert not [pid for pid in reported if _running(int(pid))], err
        assert not _group_left(job.proc.pid), err
    finally:
        (stall / "go").write_text("")
        job.kill()
    assert rc == code, err
    assert _last_line(err) == last, err
    assert "Traceback" not in err, err
    assert not list(out.glob("*.lock")), err
    for slide in slides:
        with h5py.File(out / f"{slide.stem}.h5.partial") as f:
            done, n = int(f.attrs["done"]), len(f["coords"])
        assert STALL_AFTER * BATCH <= done < n, (slide.name, done, err)  # the unflushed rows were written

    rerun = Embed(ckpt, slides, out, None)
    code, err = rerun.finish()
    assert code == 0, err
    for slide in slides:
        assert f"resumed {slide}: " in err, err
    reference = tmp_path / "serial"
    assert main(["embed", *map(str, slides), "--model", str(ckpt), "--out", str(reference), *TILES]) == 0
    for slide in slides:
        with h5py.File(reference / f"{slide.stem}.h5") as a, h5py.File(out / f"{slide.stem}.h5") as b:
            np.testing.assert_array_equal(a["coords"][()], b["coords"][()])
            np.testing.assert_array_equal(a["features"][()], b["features"][()])


@pytest.mark.slow
def test_a_second_ctrl_c_quits_while_the_workers_still_hold_their_batch(
    ckpt: Path, cmu_svs: Path, tcga_svs: Path, tmp_path: Path
) -> None:
    out, stall = tmp_path / "out", tmp_path / "stall"
    job = Embed(ckpt, [cmu_svs, tcga_svs], out, stall)
    try:
        _stall_until_both_workers_hold_rows(job, stall)
        os.killpg(job.proc.pid, signal.SIGINT)
        job.wait_for("'stopping' line", lambda: "stopping" in job.stderr)
        assert job.proc.poll() is None, job.stderr[-3000:]  # waiting for the stalled workers
        os.killpg(job.proc.pid, signal.SIGINT)
        code, err = job.finish()  # the models never go on: only the second Ctrl-C ends the run
    finally:
        (stall / "go").write_text("")
        job.kill()
    assert code == 130, err
    assert _last_line(err) == "interrupted", err
    assert "Traceback" not in err, err


def test_embed_one_stopped_by_its_cancel_event_keeps_its_rows_and_the_next_call_resumes(
    cmu_svs: Path, tmp_path: Path
) -> None:
    """What a worker's slide does once the driver stopped (fast, in-process: the slow tests run the cluster)."""
    model = tiny_model("vit")
    opts = CohortOptions("tiny", str(tmp_path / "out"), mpp=4.0, min_tissue=0.0, batch_size=BATCH)
    cancel = threading.Event()
    stopped = embed_one(cmu_svs, model, opts, progress=lambda p: cancel.set(), cancel=cancel)
    assert stopped.interrupted and not stopped.ok and stopped.error == "interrupted"
    assert not list((tmp_path / "out").glob("*.lock"))
    with h5py.File(tmp_path / "out" / "CMU-1-Small-Region.h5.partial") as f:
        kept, n = int(f.attrs["done"]), len(f["coords"])
    assert 0 < kept < n
    resumed = embed_one(cmu_svs, model, opts)
    assert resumed.ok and (resumed.resumed, resumed.tiles) == (kept, n)
    reference = embed_slide(cmu_svs, model, tmp_path / "ref", mpp=4.0, min_tissue=0.0, batch_size=BATCH)
    with h5py.File(reference) as a, h5py.File(resumed.outputs[0]) as b:
        np.testing.assert_array_equal(a["features"][()], b["features"][()])


@pytest.mark.parametrize("listed", [True, False], ids=["processing-listed", "processing-not-yet-listed"])
def test_closing_iter_cohort_early_stops_the_slides_it_has_not_yielded(
    ckpt: Path, cmu_svs: Path, tcga_svs: Path, shared_data: Path, tmp_path: Path, listed: bool
) -> None:
    """A consumer that stops (the CLI closes the generator when Ctrl-C lands outside it) leaves no lock and no
    half-stopped slide behind: the running one keeps its rows, the queued one never starts; a rerun finishes
    both with the features of an uninterrupted run.

    ``processing-not-yet-listed``: the scheduler does not list the running slide as processing yet (a race seen on
    CI), so dask cancels it while it runs: its thread goes on until its batch ends, lock held. The stop must wait
    for it, and the rerun must not be handed that cancelled task's ``interrupted`` outcome (same task key)."""
    slides = [cmu_svs, tcga_svs, shared_data / "wsi" / "CMU-1-Small-Region_DICOM"]
    opts = CohortOptions(str(ckpt), str(tmp_path / "out"), device="cpu", mpp=4.0, fallback_mpp=0.5,
                         min_tissue=0.0, batch_size=BATCH)  # fmt: skip
    with cohort_client(workers=1, device="cpu") as (client, _device):
        if not listed:
            client.processing = lambda *a, **k: {}  # type: ignore[method-assign]
        outcomes = iter_cohort(slides, opts, client)
        assert next(outcomes).ok
        outcomes.close()
        assert not list((tmp_path / "out").glob("*.lock"))
        again = list(iter_cohort(slides, opts, client))
    assert all(o.ok for o in again) and len(again) == 3
    model = load_model(str(ckpt), device="cpu")
    for slide in slides:
        ref = embed_slide(slide, model, tmp_path / "ref", mpp=4.0, fallback_mpp=0.5, min_tissue=0.0,
                          batch_size=BATCH)  # fmt: skip
        with h5py.File(ref) as a, h5py.File(tmp_path / "out" / ref.name) as b:
            np.testing.assert_array_equal(a["features"][()], b["features"][()])
