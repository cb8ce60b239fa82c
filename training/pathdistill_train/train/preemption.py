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
import threading
from types import FrameType, TracebackType

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
