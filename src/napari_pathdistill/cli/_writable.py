"""Where a command will write, checked before its work starts: one ``argument --x: ...`` line instead of an
``OSError`` traceback after the slide was read (``tiles``), napari was opened (``view --screenshot``) or the
model was loaded (``embed``)."""

from __future__ import annotations

import os
from pathlib import Path


def folder_problem(folder: str | os.PathLike) -> str | None:
    """Why files cannot be written into ``folder`` (created, with its parents, if missing), else None.

    A probe file is created and removed: file modes alone say nothing for root or on a read-only mount.
    """
    path = Path(folder).expanduser()
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".pathdistill-write-test-{os.getpid()}"
        os.close(os.open(probe, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
        probe.unlink()
    except OSError as exc:
        return f"cannot write into {path} ({exc.strerror or exc}): choose a writable folder"
    return None
