"""What a truncated TIFF lost: pyramid levels whose image directory or tile data lie past the end of the file.

A file cut inside the image directories (IFDs) of its reduced levels still opens with tifffile, with fewer
levels and no word of it. :func:`intact_levels` compares what was found with what the file declares (the
SubIFDs tag of level 0, the next-IFD pointer of the last directory read, the tile offsets of each level) and
drops the levels it cannot read whole, with one :class:`~napari_pathdistill.errors.TruncatedFileWarning`.
"""

from __future__ import annotations

import struct
import warnings
from pathlib import Path
from typing import Any

from napari_pathdistill.errors import TruncatedFileWarning


def _data_end(page: Any) -> int:
    """One past the last byte of ``page``'s tile/strip data (0 without data)."""
    return max(
        (int(o) + int(c) for o, c in zip(page.dataoffsets, page.databytecounts, strict=False) if o), default=0
    )


def _dangling_next_ifd(tif: Any, size: int) -> int | None:
    """The next-IFD offset of the last top-level directory read when it is not 0 (a directory that could not be
    read: cut off, or past the end of the file), else None."""
    last = tif.pages[len(tif.pages) - 1]
    big = tif.tiff.is_bigtiff
    count_fmt, entry, off_fmt = (tif.byteorder + "Q", 20, tif.byteorder + "Q") if big else (
        tif.byteorder + "H", 12, tif.byteorder + "I")  # fmt: skip
    fh = tif.filehandle
    with fh.lock:
        fh.seek(last.offset)
        raw = fh.read(struct.calcsize(count_fmt))
        if len(raw) < struct.calcsize(count_fmt):
            return None
        fh.seek(last.offset + len(raw) + struct.unpack(count_fmt, raw)[0] * entry)
        nxt = fh.read(struct.calcsize(off_fmt))
    if len(nxt) < struct.calcsize(off_fmt):
        return size  # the pointer itself is cut off
    offset = struct.unpack(off_fmt, nxt)[0]
    return offset or None  # not 0: a directory follows that tifffile could not read


def intact_levels(
    path: Path, tif: Any, pages: list[Any], declared: int | None = None
) -> tuple[list[Any], int | None, bool]:
    """``pages`` (level 0 first) without the reduced levels a truncation damaged; warns about what was lost.

    Level 0 is always kept (its tiles past the end read as corrupt tiles: grey in the viewer, skipped by
    embedding). Nothing is said about an intact file. ``declared``: the number of levels the file declares
    (default: level 0 and its SubIFDs, else ``len(pages)``).

    Returns:
        (the intact level pages, the file's size in bytes when it is truncated, else None, whether pyramid levels
        were lost: False when only the last tiles of level 0 were, e.g. a single-level TIFF cut short).
    """
    size = path.stat().st_size
    if declared is None:
        declared = len(pages[0].subifds or ()) + 1 if pages[0].subifds else len(pages)
    keep = [pages[0]]
    for page in pages[1:]:
        if _data_end(page) > size:
            break
        keep.append(page)
    lost = []
    if declared > len(pages):
        lost.append(f"{declared - len(pages)} of its {declared} pyramid levels (their image directories)")
    elif not pages[0].subifds and (nxt := _dangling_next_ifd(tif, size)) is not None:
        lost.append(f"the levels after level {len(pages) - 1} (the next image directory, at byte {nxt:,})")
    if len(keep) < len(pages):
        lost.append(f"{len(pages) - len(keep)} level(s) whose tile data is cut off")
    levels_lost = bool(lost)
    if _data_end(pages[0]) > size:
        lost.append("the last tiles of level 0 (shown grey)")
    if lost:
        dims = ", ".join(f"{p.imagewidth}x{p.imagelength}" for p in keep)
        warnings.warn(
            f"{path.name} is truncated (the file ends at byte {size:,}): lost {'; '.join(lost)}. Opened with the "
            f"{len(keep)} intact level(s) ({dims}); copy the file again for the whole pyramid.",
            TruncatedFileWarning,
            stacklevel=3,
        )
    return keep, size if lost else None, levels_lost
