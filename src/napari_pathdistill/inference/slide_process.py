"""Slides embedded in a child process under a per-slide time limit (``pathdistill embed --slide-timeout``).

A slide that hangs (e.g. inside a C library's read, which no thread can interrupt) would stall a cohort. With
a time limit, slides run one at a time in a long-lived child process (``python -m`` this module; the model is
loaded there once). When a slide exceeds the limit the child is killed, the slide is reported as timed out, its
lock is released, its partial output is kept when it is still a readable, resumable HDF5 (else removed), and a
new child takes the next slide. Parent and child talk over a socket pair (pickled messages); POSIX only.

The child runs in a session of its own, so a terminal's Ctrl-C reaches the parent alone. A parent stopped
mid-slide (Ctrl-C, ``kill PID``, a batch scheduler's SIGTERM) sends the child SIGTERM, on which the child stops
as the in-process path does: it writes the rows embedded since the last chunk, releases the slide's lock and exits
without a traceback (killed after :data:`INTERRUPT_GRACE` seconds, its lock then released by the parent).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path

from napari_pathdistill.inference.cohort_slide import (
    CohortOptions,
    SlideOutcome,
    embed_one,
    quiet_slide_warnings,
    worker_model,
)
from napari_pathdistill.progress import Progress

#: seconds a child stopped mid-slide has to write its rows and exit before it is killed
INTERRUPT_GRACE = 20.0


class SlideProcess:
    """A child process that embeds one slide per :meth:`run`, killed and replaced when a slide times out.

    Args:
        opts: the cohort options (the child loads ``opts.model`` once).
        threads: torch threads of the child (None: torch's default).
        startup_timeout: seconds allowed to start the child and load the model.
    """

    def __init__(
        self, opts: CohortOptions, threads: int | None = None, startup_timeout: float = 600.0
    ) -> None:
        self.opts, self.threads, self.startup_timeout = opts, threads, startup_timeout
        self._proc: subprocess.Popen | None = None
        self._conn: Connection | None = None

    def _start(self) -> str | None:
        """Start the child and wait until its model is loaded; the error text if that fails."""
        ours, theirs = socket.socketpair()
        cmd = [sys.executable, "-m", __name__, str(theirs.fileno())]
        # its own session: a terminal's Ctrl-C reaches the parent alone, which stops the child (``_interrupt``)
        # at any time, also while it is still importing torch
        self._proc = subprocess.Popen(cmd, pass_fds=(theirs.fileno(),), start_new_session=True)
        theirs.close()
        self._conn = Connection(ours.detach())
        self._conn.send((self.opts, self.threads))
        if not self._conn.poll(self.startup_timeout):
            self._stop()
            return f"the slide process did not load the model within {self.startup_timeout:.0f} s"
        try:
            status = self._conn.recv()
        except EOFError:
            status = f"the slide process exited (code {self._stop()}) while loading the model"
        return None if status == "ready" else str(status)

    def run(
        self,
        slide: str,
        timeout: float,
        progress: Callable[[Progress], None] | None = None,
        cancel: threading.Event | None = None,
    ) -> SlideOutcome:
        """Embed ``slide`` in the child; a slide not done within ``timeout`` seconds is a failed outcome. When
        ``cancel`` is set (checked every second) the child is stopped as on Ctrl-C: its rows are kept
        (``interrupted``)."""
        if self._proc is None or self._proc.poll() is not None:
            error = self._start()
            if error is not None:
                return SlideOutcome(slide, error=error)
        assert self._conn is not None and self._proc is not None
        self._conn.send(slide)
        try:
            return self._wait(slide, timeout, progress, cancel)
        except BaseException:  # Ctrl-C, the CLI's SIGTERM: the child keeps its rows too
            self._interrupt(slide)
            raise

    def _wait(
        self,
        slide: str,
        timeout: float,
        progress: Callable[[Progress], None] | None,
        cancel: threading.Event | None = None,
    ) -> SlideOutcome:
        """The outcome of ``slide``, sent to the child, or a failed one when it dies, times out or is cancelled."""
        assert self._conn is not None and self._proc is not None
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            if cancel is not None and cancel.is_set():
                self._interrupt(slide)
                return SlideOutcome(slide, error="interrupted", interrupted=True)
            if not self._conn.poll(min(left, 1.0)):
                continue
            try:
                msg = self._conn.recv()
            except EOFError:
                pid, code = self._proc.pid, self._stop()
                return SlideOutcome(
                    slide, error=f"the slide process died (exit code {code}); {self._clean(slide, pid)}"
                )
            if isinstance(msg, Progress):
                if progress is not None:
                    progress(msg)
                continue
            return msg
        pid = self._proc.pid
        self._stop()
        return SlideOutcome(slide, error=f"timed out after {timeout:g} s; {self._clean(slide, pid)}")

    def _interrupt(self, slide: str, grace: float = INTERRUPT_GRACE) -> None:
        """Stop the child mid-slide with SIGTERM: it writes its unflushed rows and releases the lock; one that has
        not exited within ``grace`` seconds is killed and its lock released here."""
        pid, hung = None, False
        if self._proc is not None and self._proc.poll() is None:
            pid = self._proc.pid
            self._proc.send_signal(signal.SIGTERM)
            try:
                self._proc.wait(grace)
            except subprocess.TimeoutExpired:
                hung = True
        self._stop()
        if hung and pid is not None:
            self._clean(slide, pid)

    def _clean(self, slide: str, pid: int) -> str:
        from napari_pathdistill.inference.output_lock import release_killed

        return release_killed(Path(self.opts.out_dir) / f"{Path(slide).stem}.h5", pid)

    def _stop(self) -> int | None:
        """Kill the child (if running); its exit code."""
        code = None
        if self._proc is not None:
            if self._proc.poll() is None:
                self._proc.kill()
            code = self._proc.wait()
        if self._conn is not None:
            self._conn.close()
        self._proc = self._conn = None
        return code

    def close(self) -> None:
        """Ask the child to exit (killed if it does not within 10 s)."""
        if self._proc is not None and self._conn is not None and self._proc.poll() is None:
            try:
                self._conn.send(None)
                self._proc.wait(10)
            except (OSError, subprocess.TimeoutExpired):
                pass
        self._stop()

    def __enter__(self) -> SlideProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _serve(conn: Connection) -> None:
    """The child: load the model, then embed each slide received until None (or the parent goes)."""
    quiet_slide_warnings()  # the outcome carries them to the parent's report
    opts, threads = conn.recv()
    if threads:
        import torch

        torch.set_num_threads(threads)
    try:
        model = worker_model(opts)
    except Exception as exc:
        conn.send(f"{type(exc).__name__}: {exc}")
        return
    conn.send("ready")
    while (slide := conn.recv()) is not None:
        conn.send(embed_one(slide, model, opts, progress=conn.send))


def _stop_on_signals() -> None:
    """SIGTERM, and SIGINT unless this process was started ignoring it, unwind the slide as a KeyboardInterrupt
    (its rows written, its lock released: ``feature_writer.write_rows``); the signals that follow during that
    clean-up (the terminal's Ctrl-C and the parent's SIGTERM both come) are ignored."""
    received: list[int] = []

    def stop(signum: int, _frame: object) -> None:
        if not received:
            received.append(signum)
            raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:  # e.g. ignored by a dask worker
        signal.signal(signal.SIGINT, stop)


if __name__ == "__main__":
    fd = int(sys.argv[1])
    os.set_inheritable(fd, False)
    _stop_on_signals()
    try:
        with contextlib.suppress(EOFError, BrokenPipeError):  # the parent went away
            _serve(Connection(fd))
    except KeyboardInterrupt:  # stopped: the parent reports it
        sys.exit(130)
