"""Whole reads of row-chunked HDF5 datasets (CLAM's and TRIDENT's ``features`` / ``coords``) in large blocks.

TRIDENT's ``save_h5`` chunks every dataset one row per chunk (``chunks=(1, D)``), CLAM's ``save_hdf5`` 32 rows
per chunk, appended batch by batch. h5py's ``dset[()]`` goes through HDF5's per-chunk path (a chunk-index
lookup and one read per chunk, ~40-100 us each): 4-8 s for the 100k one-row chunks of a large slide's TRIDENT
file, on the GUI thread when the file is dropped on napari. An unfiltered chunked dataset stores each chunk's
bytes as they are, so :func:`read_rows` lists the chunks' file offsets in one walk of the chunk index
(``H5Dchunk_iter``) and reads runs of adjacent chunks straight into the output array (a few thousand reads for
100k chunks: TRIDENT writes all rows at once, CLAM's batches alternate with its coords). Anything else
(compressed, contiguous, non-numeric, a user block, an HDF5 without ``chunk_iter``) is read by h5py.

Pure core (h5py, numpy).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from napari_pathdistill.errors import Cancelled
from napari_pathdistill.progress import checkpoint


def read_rows(dset: Any) -> np.ndarray:
    """The whole h5py dataset ``dset`` as a numpy array (its stored dtype), row-chunked ones by :func:`raw_rows`."""
    out = raw_rows(dset)
    return dset[()] if out is None else out


def raw_rows(dset: Any) -> np.ndarray | None:
    """The whole h5py dataset ``dset`` read from the file's raw chunk bytes, or None where that does not apply:
    not chunked, chunks not whole rows (``chunks[1:] != shape[1:]``), filtered (compressed), not plain numbers,
    unallocated chunks, a user block or a non-default file driver, or rows that do not match h5py's."""
    try:
        chunks = _row_chunks(dset)
        if chunks is None:
            return None
        out = np.empty(dset.shape, dset.dtype)
        row_bytes = out[:1].nbytes if len(out) else 0
        flat = memoryview(out.reshape(-1).view(np.uint8))  # type: ignore[arg-type]
        with open(dset.file.filename, "rb", buffering=0) as fh:
            for row0, offset, n_bytes in chunks:
                checkpoint()  # a cancelled worker stops between reads (100k rows: seconds on a busy disk)
                start = row0 * row_bytes
                n_bytes = min(n_bytes, len(flat) - start)  # the last chunk holds rows past the end
                fh.seek(offset)
                if fh.readinto(flat[start : start + n_bytes]) != n_bytes:
                    return None
        for i in {0, len(out) // 2, len(out) - 1}:  # the offsets are the rows h5py reads, or nothing
            if not np.array_equal(out[i], dset[i], equal_nan=out.dtype.kind == "f"):
                return None
        return out
    except Cancelled:
        raise
    except Exception:  # anything unexpected: h5py's own read
        return None


def _row_chunks(dset: Any) -> list[tuple[int, int, int]] | None:
    """(first row, file offset, bytes) of the runs of adjacent whole-row chunks of ``dset``, or None."""
    shape, chunks = dset.shape, dset.chunks
    if chunks is None or len(shape) < 1 or shape[0] == 0 or tuple(chunks[1:]) != tuple(shape[1:]):
        return None
    if dset.dtype.kind not in "fiu" or dset.dtype.fields is not None or dset.dtype.subdtype is not None:
        return None
    if dset.id.get_create_plist().get_nfilters() or dset.file.userblock_size or dset.file.driver != "sec2":
        return None
    walk = getattr(dset.id, "chunk_iter", None)
    if walk is None:  # HDF5 before 1.14 / h5py before 3.8
        return None
    found: list[tuple[int, int, int]] = []
    walk(lambda info: found.append((int(info.chunk_offset[0]), int(info.byte_offset), int(info.size))))
    per_chunk = chunks[0] * int(np.prod(shape[1:], dtype=np.int64)) * dset.dtype.itemsize
    if len(found) != -(-shape[0] // chunks[0]) or any(size != per_chunk for _, _, size in found):
        return None  # unallocated chunks (read as the fill value) or unexpected sizes
    found.sort()
    runs = [list(found[0])]
    for row0, offset, size in found[1:]:
        last = runs[-1]
        next_row = last[0] + last[2] // per_chunk * chunks[0]  # the row after the run's last chunk
        if offset == last[1] + last[2] and row0 == next_row:
            last[2] += size
        else:
            runs.append([row0, offset, size])
    return [(r[0], r[1], r[2]) for r in runs]
