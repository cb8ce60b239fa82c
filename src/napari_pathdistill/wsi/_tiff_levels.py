"""The pyramid levels of a plain TIFF's first image, including those tifffile's series detection leaves out.

tifffile puts reduced images into one pyramid only when each level is the same factor (2, 3 or 4) below the
previous one (``tifffile.pyramidize_series``): a pyramid at downsamples 1, 2, 8 (a level skipped) or 1, 3, 7.5
loses its later levels to separate series, and an intact file then looked truncated. For a generic (or
tifffile-written) single-image series, :func:`pyramid_pages` takes every reduced image of level 0's kind and
aspect, from its SubIFDs or from the reduced directories that follow it, largest first.
"""

from __future__ import annotations

import math
from typing import Any

#: series kinds built by tifffile's generic pyramid detection; OME, vendor and multiplex series are left alone
_GENERIC_KINDS = ("generic", "shaped", "uniform")


def _downsample_of(base: Any, page: Any) -> bool:
    """Whether ``page`` can be ``base`` reduced by one factor d, each side rounded either way (|side0/d - side| < 1)."""
    (h0, w0), (h, w) = _yx(base), _yx(page)
    if h < 1 or w < 1:
        return False
    lo = max(w0 / (w + 1), h0 / (h + 1))
    hi = min(w0 / (w - 1) if w > 1 else math.inf, h0 / (h - 1) if h > 1 else math.inf)
    return lo < hi


def _yx(page: Any) -> tuple[int, int]:
    """(height, width) of a page, planar (samples, h, w) ones included."""
    return int(page.imagelength), int(page.imagewidth)


def _same_kind(base: Any, page: Any) -> bool:
    return (
        page.dtype == base.dtype
        and page.samplesperpixel == base.samplesperpixel
        and page.planarconfig == base.planarconfig
        and page.ndim == base.ndim
    )


def _subifd_pages(tif: Any, base: Any) -> list[Any]:
    """The pages of ``base``'s SubIFDs that can be read (one cut off or damaged is counted lost by the caller)."""
    from tifffile import TiffPage

    pages = []
    for i, offset in enumerate(base.subifds):
        try:
            tif.filehandle.seek(offset)
            pages.append(TiffPage(tif, index=(base.index, i)))
        except Exception:  # past the end of the file: ``intact_levels`` says so
            continue
    return pages


def _following_reduced_pages(tif: Any, base: Any) -> list[Any]:
    """The top-level reduced-resolution pages right after ``base``, up to the next full-resolution image."""
    out = []
    for i in range(base.index + 1, len(tif.pages)):
        page = tif.pages[i]
        page = page.aspage() if page.is_frame else page
        if not page.is_reduced:
            break
        out.append(page)
    return out


def pyramid_pages(tif: Any, series: Any) -> tuple[list[Any], int | None]:
    """The level pages of ``series`` (a ``tifffile.TiffPageSeries``), largest first.

    Returns:
        (pages, the number of levels the file declares in SubIFDs when they were read here, else None).
    """
    pages = [lvl.keyframe for lvl in series.levels]
    if series.kind not in _GENERIC_KINDS or len(series.pages) != 1 or not isinstance(pages[0].index, int):
        return pages, None
    base = pages[0]
    declared = None
    if base.subifds and len(pages) == 1 + len(base.subifds):
        return pages, None  # tifffile found them all (parsing a SubIFD again reads its whole tile table)
    if base.subifds:
        candidates, declared = _subifd_pages(tif, base), 1 + len(base.subifds)
    else:
        candidates = _following_reduced_pages(tif, base)
    levels, ignored = [base], 0
    for page in sorted(candidates, key=lambda p: -_yx(p)[0] * _yx(p)[1]):
        (h, w), (ph, pw) = _yx(page), _yx(levels[-1])
        smaller = h <= ph and w <= pw and (h, w) != (ph, pw)
        if smaller and _same_kind(base, page) and _downsample_of(base, page):
            levels.append(page)
        else:
            ignored += 1  # not a level of this image (another image, a label): not counted as lost
    if len(levels) < len(pages) or (declared is None and len(levels) == len(pages)):
        return pages, None
    return levels, None if declared is None else declared - ignored


def other_planes_note(name: str, series: Any) -> str | None:
    """What is not shown of a brightfield ``series`` holding several images of one size (focal planes, time
    points, or channels a file without OME metadata does not name): the reader shows its first; None if one."""
    if len(series.pages) <= 1:
        return None
    planes = ", ".join(f"{a}={n}" for a, n in zip(series.axes, series.shape, strict=False) if a not in "YXS")
    h, w = _yx(series.keyframe)
    return (
        f"{name} holds {len(series.pages)} images of {w}x{h} px ({planes}: focal planes, time points or channels "
        "without names); only the first is shown and read. Save the plane you need on its own, or channels as "
        "an OME-TIFF with channel names."
    )
