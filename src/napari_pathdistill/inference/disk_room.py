"""Disk space for the last writes of a feature file, reserved before HDF5 writes them.

HDF5 reports a write that fails for a full disk late (at a flush or at close), and a close that fails that way
can crash the process inside h5py's object deallocation (measured: a disk filled while the PCA / k-means summary
was stored ended in a segmentation fault, the lock left behind). So every write that grows a finished
``.partial`` file (the summary, the ``skipped_coords`` dataset) first reserves its blocks past the file's end
with ``posix_fallocate``: HDF5 allocates new data at its end of file, into blocks that are already the file's.
A copy into a new file (the rows of undecodable tiles left out) first checks the folder's free space.

A file-size limit (``ulimit -f``, a batch scheduler's RLIMIT_FSIZE) is checked likewise: ``embed_slide`` refuses,
before embedding, an output whose estimated size (:func:`output_bytes`) exceeds it, and the reservations above
check it too (``posix_fallocate`` past the limit fails with EFBIG, which is not a file system without it).

Also the plismbench copy's ``features.npy`` is written whole or not at all (:func:`save_npy_whole`), and so are
CLAM's copies (:func:`whole_file`).

Pure core (no h5py, no Qt).
"""

from __future__ import annotations

import errno
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from napari_pathdistill.atomic import atomic_path
from napari_pathdistill.errors import PathDistillError

#: room for HDF5's metadata of the new groups, datasets and attrs (a few KiB each)
METADATA_ROOM = 256 * 1024


def summary_bytes(n_rows: int) -> int:
    """Bytes a map summary of ``n_rows`` rows adds: (N, 3) float32 scores + (N,) int32 clusters + metadata."""
    return 16 * int(n_rows) + METADATA_ROOM


def output_bytes(n_rows: int, dim: int) -> int:
    """Estimated bytes of a finished feature file: (N, D) float32 features, int64 coords, float32 tissue fractions,
    the map summary and room for the last metadata writes (what :func:`reserve_tail` reserves)."""
    return int(n_rows) * (4 * int(dim) + 16 + 4) + summary_bytes(n_rows) + METADATA_ROOM


def file_size_limit() -> int | None:
    """This process's file-size limit in bytes (RLIMIT_FSIZE, ``ulimit -f``); None when there is none."""
    try:
        import resource
    except ImportError:  # Windows
        return None
    soft = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    return None if soft == resource.RLIM_INFINITY else int(soft)


def require_size_limit(path: Path, nbytes: int, rows: int | None = None) -> None:
    """Refuse (before writing) to grow ``path`` to ``nbytes`` past this process's file-size limit.

    Args:
        rows: embedded rows ``path`` already holds (said to be kept), None before any.

    Raises:
        PathDistillError: ``nbytes`` exceeds the limit.
    """
    limit = file_size_limit()
    if limit is None or nbytes <= limit:
        return
    kept = f"; its {rows} embedded rows are kept" if rows else ""
    raise PathDistillError(
        f"{path.name} needs about {nbytes / 1e6:.1f} MB but this process's file-size limit is {limit / 1e6:.1f} "
        f"MB (ulimit -f, or the batch scheduler's){kept}: raise the limit (ulimit -f unlimited) and rerun."
    )


def fallocate(path: Path, offset: int, length: int) -> bool:
    """Give ``path`` its disk blocks from ``offset`` for ``length`` bytes (``posix_fallocate``).

    Returns:
        False when the disk has no room for them (or they pass the file-size limit); True otherwise, also where ``fallocate`` does not exist or the
        file system lacks it (writes then go as before).
    """
    if not hasattr(os, "posix_fallocate"):  # macOS, Windows
        return True
    fd = os.open(path, os.O_RDWR)
    try:
        os.posix_fallocate(fd, int(offset), int(length))
    except OSError as exc:
        return exc.errno not in (errno.ENOSPC, errno.EFBIG)  # else e.g. EOPNOTSUPP: a file system without it
    finally:
        os.close(fd)
    return True


def reserve_tail(path: Path, nbytes: int, rows: int) -> None:
    """Reserve ``nbytes`` past the end of ``path`` (a ``.partial`` holding ``rows`` embedded rows).

    Raises:
        PathDistillError: the disk has no room, or the file would pass the file-size limit; the file and its rows
            are kept for a rerun.
    """
    size = path.stat().st_size
    require_size_limit(path, size + nbytes, rows)
    if not fallocate(path, size, nbytes):
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


def save_npy_whole(
    target: Path, rows: np.ndarray, kept: str, elsewhere: str = "another --out folder"
) -> None:
    """``np.save(target, rows)`` whole or not at all: written beside it (``atomic.atomic_path``), its size
    checked, then renamed into place.

    ``np.save`` says nothing when a file-size limit cuts its write short (measured: 5,000 of 5,024 bytes, no
    error), and a full disk or Ctrl-C leaves a truncated file that plismbench globs and fails on.

    Args:
        kept: the file the data come from, named in the error (it is kept).
        elsewhere: where else to write, named in the error (the command's output option).

    Raises:
        PathDistillError: ``target`` cannot be written whole (nothing is left of it).
    """
    try:
        with atomic_path(target) as tmp, open(tmp, "wb") as fh:  # replaced into place only if written whole
            np.save(fh, rows)
            fh.flush()
            wanted, written = fh.tell(), os.fstat(fh.fileno()).st_size
            if written != wanted:
                raise OSError(f"only {written:,} of its {wanted:,} bytes were written")
    except OSError as exc:
        raise PathDistillError(_cannot_write(target, exc, rows.nbytes, kept, elsewhere)) from exc


@contextmanager
def whole_file(
    target: Path, nbytes: int, kept: str, elsewhere: str = "another --out folder"
) -> Iterator[Path]:
    """A temporary path beside ``target`` to write a file of at least ``nbytes`` bytes into (h5py, ``torch.save``),
    renamed into place only when the block ends without error and the file holds that many bytes.

    Refused before anything is written when the file-size limit or the folder's free space is below ``nbytes``
    plus :data:`METADATA_ROOM` (the format's own bytes): h5py may report neither (measured: a file-size limit hit
    while HDF5 wrote its metadata at the close was only printed, "Exception ignored in ObjectID.__dealloc__ ...
    errno = 27", and left a cut file), and a file-size limit may cut a write short without an error (as it does
    ``np.save``'s).

    Args:
        nbytes: the bytes of the data the file must hold (its arrays).
        kept, elsewhere: as :func:`save_npy_whole`.

    Raises:
        PathDistillError: ``target`` cannot be written whole (nothing is left of it), also for an ``OSError``
            raised inside the block.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        limit, room = file_size_limit(), nbytes + METADATA_ROOM
        if limit is not None and room > limit:
            raise OSError(errno.EFBIG, f"{room:,} bytes pass the file-size limit of {limit:,}")
        if shutil.disk_usage(target.parent).free < room:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        with atomic_path(target) as tmp:
            yield tmp
            if (written := tmp.stat().st_size) < nbytes:
                raise OSError(f"only {written:,} of at least {nbytes:,} bytes were written")
    except OSError as exc:
        raise PathDistillError(_cannot_write(target, exc, nbytes, kept, elsewhere)) from exc


def _cannot_write(target: Path, exc: OSError, nbytes: int, kept: str, elsewhere: str) -> str:
    free = shutil.disk_usage(target.parent).free
    return (
        f"cannot write {target} ({exc.strerror or exc}; {nbytes / 1e6:.1f} MB, {free / 1e6:.1f} MB free "
        f"there): free some space, raise the file-size limit (ulimit -f) or write to {elsewhere}, "
        f"then rerun ({kept} is kept)."
    )
