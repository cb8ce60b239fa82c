"""embed_slide / pathdistill embed on real slides: no-MPP warning, empty grids, skipping complete outputs,
and the per-slide lock between two real processes."""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import tifffile

from _fresh_process import run_python
from napari_pathdistill.cli.main import main
from napari_pathdistill.errors import EmptyTissueError
from napari_pathdistill.inference.embed import NoMPPWarning, embed_slide
from napari_pathdistill.inference.output_lock import SlideBusyError
from napari_pathdistill.models.checkpoint import save_checkpoint
from napari_pathdistill.models.factory import load_model
from napari_pathdistill.models.testing import tiny_model

FAST = ["--mpp", "4", "--min-tissue", "0", "--batch-size", "16", "--device", "cpu"]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    model = tiny_model("vit")
    return save_checkpoint(model.module, model.spec, tmp_path_factory.mktemp("ckpt"))


@pytest.fixture(scope="module")
def ckpt224(tmp_path_factory) -> Path:
    """A tiny ViT of 224 px tiles: the TCGA slide without MPP gives 224 level-0 px tiles (about 300)."""
    model = tiny_model("vit", tile_px=224)
    return save_checkpoint(model.module, model.spec, tmp_path_factory.mktemp("ckpt224"))


def _embed(slides, ckpt, out, *extra) -> int:
    return main(["embed", *map(str, slides), "--model", str(ckpt), "--out", str(out), *FAST, *extra])


def test_no_mpp_slide_warns_on_stderr_and_in_the_h5(tcga_svs, ckpt224, tmp_path, capsys) -> None:
    assert _embed([tcga_svs], ckpt224, tmp_path) == 0
    err = capsys.readouterr().err
    assert (
        f"WARNING {tcga_svs}: slide has no MPP: tiles are 224 level-0 px" in err and "--mpp-override" in err
    )
    with h5py.File(tmp_path / f"{tcga_svs.stem}.h5") as f:
        assert "no MPP" in f.attrs["warning"] and np.isnan(f.attrs["mpp"])
    with pytest.warns(NoMPPWarning, match="no MPP"):
        embed_slide(
            tcga_svs, load_model(str(ckpt224), device="cpu"), tmp_path / "api", mpp=4.0, min_tissue=0.0
        )


def test_slide_with_mpp_has_no_warning(cmu_svs, ckpt, tmp_path, capsys) -> None:
    assert _embed([cmu_svs], ckpt, tmp_path) == 0
    assert "WARNING" not in capsys.readouterr().err
    with h5py.File(tmp_path / f"{cmu_svs.stem}.h5") as f:
        assert "warning" not in f.attrs and f.attrs["mpp"] == 4.0


def test_a_slide_without_tissue_fails_clearly_without_an_empty_h5(tmp_path, ckpt, capsys) -> None:
    """A greyscale TIFF of bare glass (until 2026-12-07 any greyscale image had no tissue, a gradient included:
    tissue detection dropped colourless objects, since kept on greyscale slides)."""
    gray = tmp_path / "gray.tif"
    glass = np.random.default_rng(0).normal(228, 1.5, (1024, 1024)).clip(0, 255).astype(np.uint8)
    tifffile.imwrite(gray, glass, tile=(256, 256), resolution=(2e4, 2e4), resolutionunit="CENTIMETER")
    out = tmp_path / "out"
    args = ["embed", str(gray), "--model", str(ckpt), "--out", str(out), "--device", "cpu", "--mpp", "1"]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert f"FAILED {gray}: gray.tif: no 56 px tile has >= 50% tissue" in err and "nothing written" in err
    assert not list(out.glob("gray*"))  # no .h5, no .partial, no lock left
    with pytest.raises(EmptyTissueError):
        embed_slide(gray, load_model(str(ckpt), device="cpu"), out, mpp=1.0)


def test_rerun_skips_complete_outputs_and_overwrite_recomputes(cmu_svs, ckpt, tmp_path, capsys) -> None:
    assert _embed([cmu_svs], ckpt, tmp_path) == 0
    h5 = tmp_path / f"{cmu_svs.stem}.h5"
    first = h5.stat().st_mtime_ns
    capsys.readouterr()
    assert _embed([cmu_svs], ckpt, tmp_path) == 0
    captured = capsys.readouterr()
    assert f"skipped {cmu_svs}: complete output kept" in captured.err and str(h5) in captured.out
    assert h5.stat().st_mtime_ns == first
    assert _embed([cmu_svs], ckpt, tmp_path, "--overwrite") == 0
    assert "skipped /" not in capsys.readouterr().err and h5.stat().st_mtime_ns != first
    second = h5.stat().st_mtime_ns
    assert _embed([cmu_svs], ckpt, tmp_path, "--mpp", "8") == 1  # another embedding: kept, not replaced
    err = capsys.readouterr().err
    assert (
        f"FAILED {cmu_svs}: {h5} is a complete embedding with other settings (mpp 4 there, 8 requested)"
        in err
    )
    assert "--overwrite" in err and h5.stat().st_mtime_ns == second
    assert _embed([cmu_svs], ckpt, tmp_path, "--mpp", "8", "--overwrite") == 0
    assert "skipped /" not in capsys.readouterr().err
    with h5py.File(h5, "a") as f:
        f.attrs["done"] = len(f["coords"]) - 1  # an incomplete output is never skipped
    assert _embed([cmu_svs], ckpt, tmp_path, "--mpp", "8") == 0
    assert "skipped /" not in capsys.readouterr().err


def _hold_slide(slide: str, ckpt: str, out: str, started, release) -> None:
    """A second process embedding ``slide``; it pauses after its first chunk until ``release`` is set."""

    def pause(_p) -> None:
        started.set()
        release.wait(120)

    model = load_model(ckpt, device="cpu")
    embed_slide(slide, model, out, mpp=4.0, min_tissue=0.0, batch_size=4, chunk_batches=1, progress=pause)


def test_two_processes_on_one_slide(cmu_svs, ckpt, tmp_path) -> None:
    ctx = multiprocessing.get_context("spawn")
    started, release = ctx.Event(), ctx.Event()
    holder = ctx.Process(target=_hold_slide, args=(str(cmu_svs), str(ckpt), str(tmp_path), started, release))
    holder.start()
    try:
        assert started.wait(180), "the first process did not start writing"
        lock = tmp_path / f"{cmu_svs.stem}.h5.lock"
        assert lock.read_text().split()[0] == str(holder.pid)
        second = run_python("-m", "napari_pathdistill.cli.main", "embed", cmu_svs, "--model", ckpt,
                            "--out", tmp_path, *FAST, returncode=1)  # fmt: skip
        assert f"being written by another process (pid {holder.pid} on" in second.stderr, second.stderr
        assert "BlockingIOError" not in second.stderr and "Traceback" not in second.stderr
    finally:
        release.set()
        holder.join(120)
    assert holder.exitcode == 0 and not lock.exists()
    with h5py.File(tmp_path / f"{cmu_svs.stem}.h5") as f:
        assert f.attrs["done"] == len(f["coords"]) > 0


def test_stale_lock_of_a_dead_process_is_taken_over(cmu_svs, ckpt, tmp_path) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lock = tmp_path / f"{cmu_svs.stem}.h5.lock"
    lock.write_text(f"{dead.pid} {os.uname().nodename}\n")
    model = load_model(str(ckpt), device="cpu")
    out = embed_slide(cmu_svs, model, tmp_path, mpp=4.0, min_tissue=0.0)
    assert out.suffix == ".h5" and not lock.exists()
    lock.write_text(f"{os.getppid()} {os.uname().nodename}\n")  # a live process holds it
    with pytest.raises(SlideBusyError, match=f"pid {os.getppid()}"):
        embed_slide(cmu_svs, model, tmp_path, mpp=4.0, min_tissue=0.0, overwrite=True)
    assert lock.exists()  # not ours: left alone


def test_num_workers_sets_the_reader_threads_and_keeps_the_features(
    cmu_svs, ckpt, tmp_path, monkeypatch
) -> None:
    from concurrent.futures import ThreadPoolExecutor

    import torch

    from napari_pathdistill.inference import batches as embed_mod  # the batch loop owns the pool
    from napari_pathdistill.inference import cohort_slide

    pools: list[int] = []

    class Recording(ThreadPoolExecutor):
        def __init__(self, max_workers=None, **kw):
            pools.append(max_workers)
            super().__init__(max_workers=max_workers, **kw)

    monkeypatch.setattr(embed_mod, "ThreadPoolExecutor", Recording)
    assert _embed([cmu_svs], ckpt, tmp_path / "a", "--num-workers", "4") == 0
    assert _embed([cmu_svs], ckpt, tmp_path / "b", "--num-workers", "1") == 0
    assert _embed([cmu_svs], ckpt, tmp_path / "c") == 0  # default on CPU
    assert pools == [4, 1, 2]
    a, b = (h5py.File(tmp_path / d / f"{cmu_svs.stem}.h5") for d in "ab")
    with a, b:
        np.testing.assert_array_equal(a["features"][:], b["features"][:])
    assert cohort_slide.reader_threads(torch.device("cpu")) == 2
    assert cohort_slide.reader_threads(torch.device("cuda")) >= 2
