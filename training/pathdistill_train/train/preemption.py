"""SIGTERM as a preemption notice: finish the step, write a resumable checkpoint, stop.

A cluster scheduler sends SIGTERM before it kills a job (SLURM at its time limit or on preemption, then SIGKILL
after ``KillWait``, 30 s by default; torchrun forwards the SIGTERM it gets to every rank; Kubernetes on
eviction). Python's default action ends the process at once, exit 143, without a message and without the steps
run since the last periodic checkpoint. :class:`TermSignal` turns the signal into a flag that the training loop
reads after each step: every rank agrees on it (:func:`any_rank`, one all-reduce), rank 0 writes the checkpoint
(atomically) and the loop raises :class:`~pathdistill_train.errors.TrainTerminated`.
"""

from __future__ import annotations

import signal
import sys
import threading
from types import FrameType, TracebackType
from typing import Any

import torch
import torch.distributed as dist


class TermSignal:
    """Context manager: while active, SIGTERM sets :attr:`received` instead of ending the process.

    Installed only from the main thread (Python runs signal handlers there; elsewhere it is a no-op and SIGTERM
    keeps its previous action). The previous handler is restored on exit.
    """

    def __init__(self) -> None:
        self.received = False
        self._previous: signal.Handlers | int | object | None = None
        self._installed = False

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.received = True

    def __enter__(self) -> TermSignal:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._handle)
            self._installed = True
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._installed:
            signal.signal(signal.SIGTERM, self._previous)  # type: ignore[arg-type]
            self._installed = False


def any_rank(flag: bool, device: torch.device) -> bool:
    """True when ``flag`` is true on any rank (one all-reduce; ``flag`` itself without a process group).

    Ranks receive a forwarded SIGTERM at slightly different times, possibly in different steps: deciding
    together keeps them in the same collectives (the checkpoint's gather, the next step's all-reduce).

    Args:
        device: a device of this rank's backend (CUDA for NCCL).
    """
    if not (dist.is_available() and dist.is_initialized()):
        return flag
    value = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item() > 0)


def ignore_sigterm() -> None:
    """Ignore SIGTERM in a DataLoader worker: the training process decides when to stop.

    SLURM signals every process of a job step, the workers too; a worker ended by SIGTERM makes the DataLoader
    raise ``RuntimeError: DataLoader worker ... is killed by signal`` from its SIGCHLD handler, at any point of
    the step in progress. The workers still end with their training process (the DataLoader shuts them down;
    a worker whose parent died exits on its own) and on SIGKILL.
    """
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def close_workers(batches: Any, grace_s: float = 10.0) -> None:
    """Shut the DataLoader's workers down now, also when the training loop raised.

    The workers ignore SIGTERM (:func:`ignore_sigterm`), so neither torch's fallback (``terminate()`` of a
    worker that did not exit within 5 s) nor multiprocessing's exit handler (SIGTERM, then an unbounded join)
    can end one that hangs: left to them, a stuck worker (a read blocked on a network file system) kept the
    process from ever exiting. A worker still alive ``grace_s`` after the shutdown is killed. A worker that
    dies while being shut down (its batches are no longer needed) is one warning line on stderr: before, the
    DataLoader's SIGCHLD handler raised ``DataLoader worker ... is killed by signal: Aborted`` out of the
    shutdown, turning a finished run into a failed one, or replacing the error the loop raised.

    Args:
        batches: the iterator of :func:`~pathdistill_train.data.loaders.build_batches`; anything else (the
            single-process DataLoader iterator, the device pipeline) is left alone.
    """
    shutdown = getattr(batches, "_shutdown_workers", None)  # torch's multi-process DataLoader iterator
    if not callable(shutdown):
        return
    try:
        shutdown()
    except RuntimeError as error:  # torch's SIGCHLD handler: the exit codes below say which worker, how
        if not str(error).startswith("DataLoader worker"):
            raise
    for worker in getattr(batches, "_workers", []):
        worker.join(timeout=grace_s)
        if worker.is_alive():
            worker.kill()
            worker.join()
            print(f"pathdistill-train: warning: DataLoader worker (pid {worker.pid}) did not exit within "
                  f"{grace_s:g} s of the shutdown; killed", file=sys.stderr, flush=True)  # fmt: skip
        elif worker.exitcode:
            print(f"pathdistill-train: warning: DataLoader worker (pid {worker.pid}) ended by "
                  f"{_how(worker.exitcode)} while being shut down; its batches were no longer needed",
                  file=sys.stderr, flush=True)  # fmt: skip


def _how(exitcode: int) -> str:
    """``signal SIGABRT`` for a negative exit code (multiprocessing's convention), ``exit code N`` else."""
    if exitcode < 0:
        try:
            return f"signal {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"signal {-exitcode}"
    return f"exit code {exitcode}"
