"""The lock file of a per-slide output of ``embed_slide``, and the clean-up after a killed writer.

``<stem>.h5.lock`` is created with ``O_CREAT | O_EXCL`` and holds ``pid host``: a second process (or dask
worker) on the same slide is refused with a clear message instead of HDF5's BlockingIOError or a corrupt
object header. A lock left by a killed process on this host (its pid no longer runs) is taken over.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from napari_pathdistill.errors import PathDistillError


class SlideBusyError(PathDistillError):
    """Another process is writing the same slide's output (its lock file exists and its pid runs)."""


@contextmanager
def slide_lock(out: Path) -> Iterator[Path]:
    """Hold ``<out>.lock`` while writing ``out``; removed on exit (also on errors and cancellation).

    Raises:
        SlideBusyError: another live process holds the lock.
    """
    lock = out.with_name(out.name + ".lock")
    _acquire(lock, out)
    try:
        yield lock
    finally:
        lock.unlink(missing_ok=True)


def _acquire(lock: Path, out: Path) -> None:
    """Create ``lock`` exclusively; take over a stale one (dead pid on this host) once."""
    for _attempt in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            pid, host = _holder(lock)
            if host == socket.gethostname() and pid is not None and not _alive(pid):
                lock.unlink(missing_ok=True)  # stale: its process was killed
                continue
            raise SlideBusyError(
                f"{out.name} is being written by another process (pid {pid} on {host}); skipped here. If "
                f"that process is gone, delete {lock}."
            ) from None
        except OSError as exc:  # a read-only folder or file system, no permission
            raise PathDistillError(
                f"cannot write {out.name} into {lock.parent} ({exc.strerror or exc}): write to another folder "
                "(--out) or make this one writable."
            ) from exc
        with os.fdopen(fd, "w") as fh:
            fh.write(f"{os.getpid()} {socket.gethostname()}\n")
        return
    raise SlideBusyError(f"{out.name}: could not take over the stale lock {lock}; delete it and rerun.")


def _holder(lock: Path) -> tuple[int | None, str]:
    """(pid, host) written in ``lock``; (None, '?') when unreadable (e.g. being written)."""
    try:
        pid, host = lock.read_text().split()[:2]
        return int(pid), host
    except (OSError, ValueError):
        return None, "?"


def _alive(pid: int) -> bool:
    """Whether process ``pid`` runs on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # runs, as another user
        return True
    return True


def release_killed(out: Path, pid: int) -> str:
    """Clean up after the process ``pid`` was killed while writing ``out``; says what was left.

    Its lock is removed (when it is that process's), a half-written ``.tmp`` is removed, and its ``.partial``
    is kept when it is a readable HDF5 with a ``done`` count (the next run resumes it), else removed.
    """
    import h5py

    lock = out.with_name(out.name + ".lock")
    if _holder(lock)[0] == pid:
        lock.unlink(missing_ok=True)
    out.with_name(out.name + ".tmp").unlink(missing_ok=True)
    partial = out.with_suffix(".h5.partial")
    if not partial.exists():
        return "nothing was written"
    try:
        with h5py.File(partial, "r") as f:
            done, n = int(f.attrs["done"]), len(f["coords"])
            f["features"].shape  # noqa: B018 (readable)
    except (OSError, KeyError, ValueError):
        partial.unlink(missing_ok=True)
        return f"its unreadable partial output {partial.name} was removed"
    return f"{partial.name} ({done} of {n} tiles) is kept: a rerun resumes it"
