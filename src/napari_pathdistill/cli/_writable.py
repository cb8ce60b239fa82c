"""Where a command will write, checked before its work starts: one ``argument --x: ...`` line instead of an
``OSError`` traceback after the slide was read (``tiles``), napari was opened (``view --screenshot``) or the
model was loaded (``embed``)."""

from __future__ import annotations

import os
from pathlib import Path


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
