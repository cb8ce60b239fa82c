"""Test helper: new files fail to be created as on a read-only file system (tests may run as root, whom file
modes do not stop)."""

from __future__ import annotations

import errno
import os
from typing import Any


def no_file_creation(monkeypatch: Any, module: Any) -> None:
    """``module.os.open`` raises EROFS for any call that would create a file; other opens go through."""
    real_open = os.open

    def no_create(path, flags, *args):
        if flags & os.O_CREAT:
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
        return real_open(path, flags, *args)

    monkeypatch.setattr(module.os, "open", no_create)
