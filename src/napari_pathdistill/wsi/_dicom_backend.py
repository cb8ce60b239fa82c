"""DICOM WSI backend (pydicom + imagecodecs) for the DICOM slides OpenSlide does not read.

OpenSlide stays first for every DICOM series it reads (``open_dicom``); this backend takes the rest: instances
without ImageType (TCGA frozen sections converted to DICOM, which OpenSlide refuses with "Couldn't get image
flavor"), TILED_SPARSE frames in any storage order, transfer syntaxes OpenSlide lacks (JPEG-LS, HTJ2K, ...).

* Levels are the VOLUME instances of one series (the one with the largest VOLUME when a folder holds
  several), one level per total-pixel-matrix size, sorted largest first; a single ``.dcm`` is one level.
  Parts of a concatenation (same SOPInstanceUIDOfConcatenationSource) form one level; another instance of
  an already seen size (a second focal plane or optical path) is ignored, as are frames of other focal
  planes / optical paths inside an instance (the first frame's are read).
* An instance without ImageType is read as VOLUME (the TCGA case) unless its shared Frame Type says otherwise.
  LABEL, OVERVIEW and THUMBNAIL instances are the associated images ``label``, ``macro``, ``thumbnail``.
* Tile placement: TILED_FULL frames are row-major over the tile grid (frames past one plane belong to other
  focal planes / optical paths); otherwise each frame sits at its PerFrameFunctionalGroupsSequence ->
  PlanePositionSlideSequence -> Column/RowPositionInTotalImagePixelMatrix (1-based), so column-major or
  shuffled storage lands right. Tile-grid cells no frame covers read white.
* ImageOrientationSlide is NOT applied: the total pixel matrix is shown as stored, row 0 on top, as
  OpenSlide (which ignores the attribute), wsidicom and highdicom do; the orientation (and the origin) only
  map matrix pixels to slide millimetres (wsidicom's ``ImageCoordinateSystem.image_to_slide``). Rotating
  here would put our pixels at other coordinates than OpenSlide's for the same series. It is kept in
  ``properties['dicom.ImageOrientationSlide']``.
* MPP (y, x) um/px from PixelMeasuresSequence -> PixelSpacing (mm, [row spacing, column spacing]) * 1e3.

Thread safety: the frame index is built at open and never changes; frames are read with ``os.pread`` (no
shared file position) and decoded only when a read needs them.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from napari_pathdistill.errors import WSIError
from napari_pathdistill.wsi._backend_utils import dicom_candidates
from napari_pathdistill.wsi._dicom_frames import TiledLevel
from napari_pathdistill.wsi.levels import PyramidLevel

WSI_SOP = "1.2.840.10008.5.1.4.1.1.77.1.6"
ASSOCIATED = {"LABEL": "label", "OVERVIEW": "macro", "THUMBNAIL": "thumbnail"}
_PROPERTY_KEYS = ("Manufacturer", "ManufacturerModelName", "StudyInstanceUID", "SeriesInstanceUID",
                  "ContainerIdentifier", "PhotometricInterpretation", "DimensionOrganizationType",
                  "ImageOrientationSlide", "ImageType", "TotalPixelMatrixColumns", "TotalPixelMatrixRows",
                  "Columns", "Rows", "NumberOfFrames")  # fmt: skip


def _dicm_magic(f: Path) -> bool:
    with f.open("rb") as fh:
        head = fh.read(132)
    return head[128:132] == b"DICM" and head[:4] not in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")


def is_dicom(path: Path) -> bool:
    """A DICOM Part-10 file (not a DICOM-TIFF), or a folder holding one; never raises."""
    try:
        if path.is_dir():
            return any(_dicm_magic(f) for f in dicom_candidates(path))
        return path.is_file() and _dicm_magic(path)
    except OSError:
        return False


def open_dicom(path: Path, *, openslide_reads: bool) -> Any:
    """OpenSlide's backend when it recognises and opens ``path``, else :class:`DicomBackend`."""
    if openslide_reads:
        from napari_pathdistill.wsi._openslide_backend import OpenSlideBackend

        try:
            return OpenSlideBackend(path)
        except WSIError:
            pass  # no ImageType ("Couldn't get image flavor"), no VOLUME, a layout libdicom refuses...
    return DicomBackend(path)


@dataclass
class _Instance:
    path: Path
    ds: Any
    pixel_offset: int
    flavor: str


def _flavor(ds: Any) -> str:
    """Value 3 of ImageType (else of the shared Frame Type); VOLUME when neither states it."""
    values = ds.get("ImageType")
    if not values:
        try:
            values = (
                ds.SharedFunctionalGroupsSequence[0].WholeSlideMicroscopyImageFrameTypeSequence[0].FrameType
            )
        except (AttributeError, IndexError, KeyError):
            values = None
    values = [values] if isinstance(values, str) else list(values or [])
    return str(values[2]).upper() if len(values) >= 3 else "VOLUME"


def _read_instance(path: Path) -> _Instance:
    """The header of a DICOM file (up to Pixel Data) and where its Pixel Data starts."""
    import pydicom

    try:
        with path.open("rb") as fh:
            ds = pydicom.dcmread(fh, stop_before_pixels=True)
            offset = fh.tell()
            tag = fh.read(4)
    except Exception as exc:  # InvalidDicomError, a truncated header, ...
        raise WSIError(
            f"{path.name} cannot be read as DICOM ({exc}); the file is truncated or corrupt."
        ) from exc
    sop = str(ds.get("SOPClassUID", ""))
    if sop != WSI_SOP:
        kind = getattr(ds.get("SOPClassUID"), "name", "") or sop or "no SOP class"
        raise WSIError(f"{path.name} is a DICOM file but not a whole-slide image ({kind}).")
    if tag != b"\xe0\x7f\x10\x00":
        raise WSIError(
            f"{path.name} is a DICOM whole-slide file without pixel data; it is truncated or corrupt."
        )
    return _Instance(path, ds, offset, _flavor(ds))


def _scan(path: Path) -> tuple[list[_Instance], list[str]]:
    """The DICOM WSI instances of a folder (or the one file), and a note per file that is not one."""
    if not path.is_dir():
        return [_read_instance(path)], []
    instances, notes = [], []
    for f in dicom_candidates(path, limit=None):  # every instance of the series
        try:
            if _dicm_magic(f):
                instances.append(_read_instance(f))
        except (WSIError, OSError) as exc:
            notes.append(str(exc))
    return instances, notes


def _volume_groups(path: Path, instances: list[_Instance], notes: list[str]) -> list[list[_Instance]]:
    """The VOLUME instances of the largest series, one list (concatenation parts) per size, largest first."""
    volumes = [i for i in instances if i.flavor == "VOLUME"]
    if not volumes:
        raise WSIError(_no_volume_message(path, instances, notes))
    series = max(volumes, key=lambda i: _size(i)[0] * _size(i)[1]).ds.get("SeriesInstanceUID")
    groups: dict[tuple[int, int], list[_Instance]] = {}
    ordered = sorted(volumes, key=lambda i: _size(i)[0] * _size(i)[1], reverse=True)
    for inst in (i for i in ordered if i.ds.get("SeriesInstanceUID") == series):
        first = groups.get(_size(inst), [inst])[0]
        if _source(inst) == _source(first):  # else another focal plane / optical path of that size: skipped
            groups.setdefault(_size(inst), []).append(inst)
    return list(groups.values())


def _size(inst: _Instance) -> tuple[int, int]:
    """(rows, columns) of the instance's total pixel matrix."""
    ds = inst.ds
    return (int(ds.get("TotalPixelMatrixRows", ds.Rows)), int(ds.get("TotalPixelMatrixColumns", ds.Columns)))


def _source(inst: _Instance) -> str:
    """The SOP instance a file belongs to (shared by the parts of a concatenation)."""
    return str(inst.ds.get("SOPInstanceUIDOfConcatenationSource") or inst.ds.get("SOPInstanceUID"))


def _no_volume_message(path: Path, instances: list[_Instance], notes: list[str]) -> str:
    if not instances:
        found = "; ".join(n.rstrip(".") for n in notes) if notes else "no DICOM files"
        return f"{path} holds no DICOM whole-slide image: {found}."
    kinds = Counter(i.flavor for i in instances)
    listed = ", ".join(f"{k} ({n} file{'s' if n > 1 else ''})" for k, n in sorted(kinds.items()))
    where = "folder" if path.is_dir() else "file"
    msg = (f"{path} has no VOLUME instance (the image pyramid) of a DICOM whole-slide series, so there is no "
           f"slide to read; the {where} holds only: {listed}. Copy the series' VOLUME .dcm file(s) (the large "
           "ones) into the folder.")  # fmt: skip
    return msg + (f" Unreadable: {'; '.join(notes)}" if notes else "")


def _mpp(ds: Any) -> tuple[float, float] | None:
    """(y, x) um/px from PixelMeasuresSequence -> PixelSpacing (mm, [row, column] spacing), or None."""
    for seq in ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence"):
        try:
            spacing = [float(v) for v in ds.get(seq)[0].PixelMeasuresSequence[0].PixelSpacing]
        except (AttributeError, IndexError, KeyError, TypeError, ValueError):
            continue
        if len(spacing) == 2 and all(math.isfinite(v) and v > 0 for v in spacing):
            return (spacing[0] * 1e3, spacing[1] * 1e3)
    return None


class DicomBackend:
    """Lazy, thread-safe reader of a DICOM WSI series (folder) or one DICOM WSI file."""

    name = "dicom"

    def __init__(self, path: Path) -> None:
        instances, notes = _scan(path)
        groups = _volume_groups(path, instances, notes)
        self._levels: list[TiledLevel] = []
        try:
            for group in groups:
                self._levels.append(TiledLevel([(i.path, i.ds, i.pixel_offset) for i in group]))
        except BaseException:
            self.close()
            raise
        h0, w0 = self._levels[0].shape
        self.levels = [PyramidLevel(lv.shape, (w0 / lv.shape[1] + h0 / lv.shape[0]) / 2.0, lv.tile)
                       for lv in self._levels]  # fmt: skip
        base = groups[0][0].ds
        self.mpp = _mpp(base)
        series = base.get("SeriesInstanceUID")
        self._associated = {ASSOCIATED[i.flavor]: i for i in reversed(instances)
                            if i.flavor in ASSOCIATED and i.ds.get("SeriesInstanceUID") == series}  # fmt: skip
        self.properties = {
            f"dicom.{k}": _text(base.get(k)) for k in _PROPERTY_KEYS if base.get(k) is not None
        }
        self.properties["dicom.TransferSyntaxUID"] = str(base.file_meta.TransferSyntaxUID)
        self.properties["pathdistill.backend"] = "dicom"

    def read_level(self, level: int, x: int, y: int, w: int, h: int) -> np.ndarray:
        """(h, w, 3) uint8 block at level pixels (x, y); outside the slide and missing frames white."""
        return self._levels[level].read(x, y, w, h)

    def read_region(self, location: tuple[int, int], level: int, size: tuple[int, int]) -> np.ndarray:
        """OpenSlide-style read: ``location`` (x, y) in level-0 px, ``size`` (w, h) in level px."""
        ds = self.levels[level].downsample
        return self.read_level(level, round(location[0] / ds), round(location[1] / ds), size[0], size[1])

    def associated_image_names(self) -> list[str]:
        return sorted(self._associated)

    def read_associated(self, name: str) -> np.ndarray:
        if name not in self._associated:
            names = ", ".join(self.associated_image_names()) or "none"
            raise WSIError(f"No associated image {name!r}; this slide has: {names}.")
        inst = self._associated[name]
        level = TiledLevel([(inst.path, inst.ds, inst.pixel_offset)])
        try:
            return level.read(0, 0, level.shape[1], level.shape[0])
        finally:
            level.close()

    def close(self) -> None:
        for level in self._levels:
            level.close()


def _text(value: Any) -> str:
    """A DICOM value as text, multi-values joined with a backslash as in DICOM."""
    return (
        "\\".join(str(v) for v in value)
        if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue"
        else str(value)
    )
