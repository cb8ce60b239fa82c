"""Frame positions of a TILED_SPARSE DICOM WSI instance, read from the raw bytes of its per-frame groups.

pydicom builds a Dataset for every item of PerFrameFunctionalGroupsSequence and for each nested sequence, about
0.4 ms a frame: opening a TCGA-layout slide (column-major TILED_SPARSE, no ImageType, so OpenSlide refuses it and
the pydicom backend reads it) of 16,384 frames took 6 s on napari's main thread, a 40x slide's 120,000 frames
about 45 s. Each frame's position is two fixed-size SL elements, Column/RowPositionInTotalImagePixelMatrix
(0048,021E) and (0048,021F): :func:`raw_positions` finds them in the sequence's undecoded bytes. It answers only
when that is unambiguous (little endian, one position pair per frame, one focal plane and optical path in the
whole sequence); otherwise None, and the caller walks the parsed sequence as before.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

#: (5200,9230) PerFrameFunctionalGroupsSequence
PER_FRAME_TAG = 0x52009230
_COLUMN, _ROW = b"\x48\x00\x1e\x02", b"\x48\x00\x1f\x02"  # (0048,021E), (0048,021F), little endian
#: elements whose values tell the focal planes / optical paths apart: ZOffsetInSlideCoordinateSystem (DS),
#: OpticalPathIdentifier (SH)
_PLANE_TAGS = (b"\x40\x00\x4a\x07", b"\x48\x00\x06\x01")


def _values(raw: bytes, tag: bytes, vr: bytes, implicit: bool) -> list[bytes]:
    """The values of every element ``tag`` in ``raw`` (little endian, explicit VR ``vr`` or implicit VR)."""
    head = tag + (b"" if implicit else vr)
    size = 4 if implicit else 2
    out = []
    for m in re.finditer(re.escape(head), raw):
        at = m.end()
        n = int.from_bytes(raw[at : at + size], "little")
        out.append(raw[at + size : at + size + n])
    return out


def _positions(raw: bytes, tag: bytes, implicit: bool) -> np.ndarray:
    """The SL values (int32) of every element ``tag`` of length 4 in ``raw``."""
    head = tag + (b"\x04\x00\x00\x00" if implicit else b"SL\x04\x00")
    starts = [m.end() for m in re.finditer(re.escape(head), raw)]
    return np.array([int.from_bytes(raw[s : s + 4], "little", signed=True) for s in starts], np.int64)


def raw_positions(ds: Any, n_frames: int) -> list[tuple[int, int, int]] | None:
    """(frame index, x0, y0) of the first ``n_frames`` frames (0-based total-pixel-matrix px), or None.

    None when the per-frame sequence was already parsed, is big endian, holds other than one position pair per
    frame (in frame order) or more than one focal plane or optical path: the caller then
    reads the parsed sequence (:func:`~napari_pathdistill.wsi._dicom_frames.frame_positions`).
    """
    from pydicom.dataelem import RawDataElement

    elem = ds.get_item(PER_FRAME_TAG)
    if not isinstance(elem, RawDataElement) or not elem.is_little_endian or not elem.value:
        return None
    raw, implicit = bytes(elem.value), bool(elem.is_implicit_VR)
    cols, rows = _positions(raw, _COLUMN, implicit), _positions(raw, _ROW, implicit)
    if not len(cols) == len(rows) == n_frames:
        return None
    for tag, vr in zip(_PLANE_TAGS, (b"DS", b"SH"), strict=True):
        values = _values(raw, tag, vr, implicit)
        if len(values) not in (0, n_frames) or len({v.strip(b" \x00") for v in values}) > 1:
            return None  # several planes (only the first one's frames are wanted), or not one value a frame
    return [(i, int(x) - 1, int(y) - 1) for i, (x, y) in enumerate(zip(cols, rows, strict=True))]
