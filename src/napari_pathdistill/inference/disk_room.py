"""Disk space for the last writes of a feature file, reserved before HDF5 writes them.

HDF5 reports a write that fails for a full disk late (at a flush or at close), and a close that fails that way
can crash the process inside h5py's object deallocation (measured: a disk filled while the PCA / k-means summary
was stored ended in a segmentation fault, the lock left behind). So every write that grows a finished
``.partial`` file (the summary, the ``skipped_coords`` dataset) first reserves its blocks past the file's end
with ``posix_fallocate``: HDF5 allocates new data at its end of file, into blocks that are already the file's.
A copy into a new file (the rows of undecodable tiles left out) first checks the folder's free space.

Pure core (no h5py, no Qt).
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

from napari_pathdistill.errors import PathDistillError

#: room for HDF5's metadata of the new groups, datasets and attrs (a few KiB each)
METADATA_ROOM = 256 * 1024


def summary_bytes(n_rows: int) -> int:
    """Bytes a map summary of ``n_rows`` rows adds: (N, 3) float32 scores + (N,) int32 clusters + metadata."""
    return 16 * int(n_rows) + METADATA_ROOM


def fallocate(path: Path, offset: int, length: int) -> bool:
    """Give ``path`` its disk blocks from ``offset`` for ``length`` bytes (``posix_fallocate``).

    Returns:
        False when the disk has no room for them; True otherwise, also where ``fallocate`` does not exist or the
        file system lacks it (writes then go as before).
    """
    if not hasattr(os, "posix_fallocate"):  # macOS, Windows
        return True
    fd = os.open(path, os.O_RDWR)
    try:
        os.posix_fallocate(fd, int(offset), int(length))
    except OSError as exc:
        return exc.errno != errno.ENOSPC  # e.g. EOPNOTSUPP: a file system without it
    finally:
        os.close(fd)
    return True


def reserve_tail(path: Path, nbytes: int, rows: int) -> None:
    """Reserve ``nbytes`` past the end of ``path`` (a ``.partial`` holding ``rows`` embedded rows).

    Raises:
        PathDistillError: the disk has no room; the file and its rows are kept for a rerun.
    """
    if not fallocate(path, path.stat().st_size, nbytes):
        raise PathDistillError(_full(path, nbytes, rows))


def require_free(path: Path, nbytes: int, rows: int) -> None:
    """Refuse (before writing) a new file beside ``path`` that needs ``nbytes`` more than the folder has free.

    Raises:
        PathDistillError: as :func:`reserve_tail`.
    """
    if shutil.disk_usage(path.parent).free < nbytes:
        raise PathDistillError(_full(path, nbytes, rows))


def _full(path: Path, nbytes: int, rows: int) -> str:
    return (
        f"no space left in {path.parent} to finish {path.name} ({nbytes / 1e6:.1f} MB more needed): its {rows} "
        "embedded rows are kept; free some space and rerun (it finishes the file without embedding again)."
    )
