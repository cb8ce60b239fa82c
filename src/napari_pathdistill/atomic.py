"""Atomic file writes: every result file appears complete or not at all (no half-written file on a crash);
:func:`folder_problem` says before a run why its output folder cannot be written.

The content is written to a hidden temporary file in the target's folder (same file system, so the final
``os.replace`` is atomic) whose name keeps the target's suffix, so writers that infer the format from the
name (matplotlib, h5py, torch, safetensors) behave as with the target itself. The file gets the permissions a
plain ``open()`` would give it (0666 less the umask: 0644 typically), not ``mkstemp``'s private 0600.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces ``path``, on any error it is removed.

    Example:
        >>> with atomic_path(out / "figure.png") as tmp:  # doctest: +SKIP
        ...     fig.savefig(tmp)
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.stem}.", suffix=target.suffix)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        # mkstemp's 0600 (or a writer's own, e.g. safetensors') -> what open() gives: 0644 with umask 022
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def _umask() -> int:
    """The process umask, read without changing it where Linux shows it (else set and restored at once)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8, newlines as given) to ``path`` atomically; returns ``path``."""
    with atomic_path(path) as tmp, tmp.open("w", encoding="utf-8", newline="") as fh:
        fh.write(text)
    return Path(path)


def folder_problem(folder: str | os.PathLike, create: bool = False) -> str | None:
    """Why files cannot be written into ``folder``, else None.

    A probe file is created and removed: file modes alone say nothing for root or on a read-only mount. A missing
    folder is made (with its parents) only with ``create``; else the probe goes into its nearest existing
    ancestor, so a command that then fails on its input (a multiplex slide ``tiles`` refuses) leaves no empty
    output folder behind.
    """
    path = Path(folder).expanduser()
    try:
        if create:
            path.mkdir(parents=True, exist_ok=True)
        where = path
        while not where.exists() and where.parent != where:
            where = where.parent
        if not where.is_dir():
            return f"cannot write into {path} ({where} is not a folder): choose a writable folder"
        probe = where / f".pathdistill-write-test-{os.getpid()}"
        os.close(os.open(probe, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
        probe.unlink()
    except OSError as exc:
        return f"cannot write into {path} ({exc.strerror or exc}): choose a writable folder"
    return None
