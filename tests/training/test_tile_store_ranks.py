"""Ranks other than 0 wait for the device pipeline's tile store without a collective.

Rank 0 decodes every tile into the store (an hour for 100k tiles of JPEG 2000 slides at 30 tiles/s);
the other ranks used to wait in ``dist.barrier()``, which NCCL aborts after its default 10-minute timeout.
Here the process group's timeout is cut to 0.2 s while the store is written: a collective wait fails, a wait
on the file does not.
"""

from __future__ import annotations

import datetime
import json
import os
import socket
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from pathdistill_train.config import load_config


def _worker(rank: int, port: int, out: str, slide: str, tiles: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2",
                      LOCAL_RANK=str(rank))  # fmt: skip
    torch.set_num_threads(1)
    from pathdistill_train import distributed
    from pathdistill_train.data.loaders import build_batches

    overrides = [f"output_dir={out}", f"data.slides=[{slide}]", f"data.tile_dirs=[{tiles}]",
                 "data.mpp_override=0.5", "data.pipeline=device"]  # fmt: skip
    cfg = load_config("smoke_cpu", overrides)
    env = distributed.enable("gloo", "cpu")
    dist.barrier()  # both ranks are here: from now on a collective waits only for the store
    dist.set_timeout(datetime.timedelta(seconds=0.2))
    batches = build_batches(cfg, rank, 2, 0, env.device)
    dist.set_timeout(datetime.timedelta(minutes=5))
    positions = next(batches)["position"].tolist()
    Path(out, f"rank{rank}.json").write_text(json.dumps(positions))
    distributed.cleanup()


def test_ranks_wait_for_the_tile_store_outside_collectives(tmp_path, tcga_svs, histolab_tiles) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_worker, args=(port, str(tmp_path), str(tcga_svs), str(histolab_tiles)), nprocs=2, join=True)
    assert (tmp_path / "tile_store.npy").is_file()
    shape = json.loads((tmp_path / "tile_store.json").read_text())["shape"]
    assert shape[0] > 100  # the slide's tissue tiles and the 33 folder tiles
    p0, p1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2))
    assert p0 == [0, 2, 4, 6] and p1 == [1, 3, 5, 7]  # each rank its share of the stream
