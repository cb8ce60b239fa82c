"""Which backend reads a path: format sniffing, vendor-format refusals and path checks (FIFO, permissions).

:func:`choose_backend` is ``open_pyramid``'s dispatch: the optional fastslide for VSI/CZI/iSyntax (or everything
it reads when asked), OpenSlide for the vendor formats and DICOM it reads (pydicom for the DICOM it refuses),
tifffile for OME-TIFF/SubIFD/multiplex TIFFs, PIL for small plain images; a vendor file OpenSlide rejects is
refused with OpenSlide's reason, never read by tifffile instead.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from napari_pathdistill.errors import WSIError
from napari_pathdistill.wsi._backend import Backend, microscope_mpp
from napari_pathdistill.wsi._openslide_backend import OpenSlideBackend, detect_vendor


def _is_tiff(path: Path) -> bool:
    try:
        with path.open("rb") as fh:
            magic = fh.read(4)
    except OSError:
        return False
    return magic in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")


def choose_backend(path: Path) -> Backend:
    """The backend that reads ``path`` (see the module docstring for the order).

    Raises:
        WSIError: missing, unreadable or non-regular path, empty folder, a vendor file OpenSlide rejects (with its
            reason), a truncated/corrupt file, or a format nothing here reads.
    """
    from napari_pathdistill.wsi import _fastslide_backend, _image_backend
    from napari_pathdistill.wsi._dicom_backend import is_dicom, open_dicom
    from napari_pathdistill.wsi._tifffile_backend import TiffFileBackend

    if _check_path(path) and not any(path.iterdir()):
        raise WSIError(f"{path} is an empty folder; expected a DICOM whole-slide series.")
    if _fastslide_backend.choose(path):  # optional package; VSI/CZI/iSyntax, or everything it reads if asked
        return _fastslide_backend.FastSlideBackend(path)
    vendor = detect_vendor(path)
    if vendor == "dicom" or is_dicom(path):  # OpenSlide first, pydicom for the DICOM it refuses
        return open_dicom(path, openslide_reads=vendor == "dicom")
    if vendor is None and path.is_dir():  # no DICOM series, no vendor index: say what the folder holds
        raise WSIError(_folder_refusal(path))
    if vendor is not None and vendor != "generic-tiff":
        return OpenSlideBackend(path)
    if vendor is None and _claims_vendor_format(path):
        raise WSIError(_openslide_refusal(path, VENDOR_SUFFIXES[path.suffix.lower()]))
    if _is_tiff(path):
        tiff = TiffFileBackend(path)
        if tiff.vendor is not None and vendor is None:  # e.g. a truncated SVS renamed .tif
            tiff.close()
            raise WSIError(_openslide_refusal(path, tiff.vendor))
        if vendor == "generic-tiff" and len(tiff.levels) <= 1 and tiff.channels is None:
            return _openslide_unless_it_loses_mpp(path, tiff)
        return tiff
    if path.is_file() and path.suffix.lower() in _image_backend.SUFFIXES:
        return _image_backend.ImageBackend(path)
    if path.name.lower().endswith(_fastslide_backend.ONLY_FASTSLIDE):
        raise WSIError(
            f"{path.name}: Olympus VSI, Zeiss CZI and Philips iSyntax slides are read by the optional fastslide "
            "backend, which is not installed: `pip install fastslide` (Python 3.11), then open it again."
        )
    raise WSIError(
        f"{path.name} is not a whole-slide image that OpenSlide or tifffile can read. Supported: {SUPPORTED}."
    )


#: the slides read, as the messages for a file that is none name them
SUPPORTED = (".svs .tif/.tiff .ndpi .mrxs .scn .bif .vms .svslide, DICOM WSI folders, OME-TIFF, pyramidal TIFF and "
             "small JPEG/PNG")  # fmt: skip

#: suffixes of the slide files named in the message for a folder that is no slide (e.g. ``x.svs/`` unzipped)
SLIDE_FILE_SUFFIXES = (".svs", ".tif", ".tiff", ".ndpi", ".mrxs", ".scn", ".bif", ".vms", ".vmu", ".svslide", ".btf",
                       ".qptiff", ".vsi", ".czi", ".isyntax", ".i2syntax")  # fmt: skip


def _folder_refusal(path: Path, limit: int = 1000) -> str:
    """The message for a folder that holds no DICOM series, naming the slide files in it (first ``limit`` entries)."""
    slides: list[str] = []
    with os.scandir(path) as entries:
        for i, entry in enumerate(entries):
            if i >= limit:
                break
            if entry.name.lower().endswith(SLIDE_FILE_SUFFIXES) and entry.is_file():
                slides.append(entry.name)
    head = f"{path} is a folder, not a slide file, and holds no DICOM whole-slide series"
    if not slides:
        return head + "; it holds no slide file either."
    names = ", ".join(sorted(slides)[:3]) + (f" and {len(slides) - 3} more" if len(slides) > 3 else "")
    return f"{head}; open the slide file in it instead: {names}."


def _openslide_unless_it_loses_mpp(path: Path, tiff: Backend) -> Backend:
    """A single-level generic TIFF: OpenSlide reads its tiles natively, but takes its pixel size from the
    resolution tags only; when tifffile found one OpenSlide lacks (an OME-XML ``PhysicalSizeX``, as QuPath and
    Bio-Formats write), the tifffile backend keeps it. It also keeps 12-bit (10, 14) samples stored in 16 bits,
    which OpenSlide (libtiff's RGBA reads: the high byte) shows nearly black, an OME-TIFF's label and
    macro Images, which OpenSlide does not expose, and a truncated pyramid left with its level 0 (what it lost is
    known here: the reader says so instead of calling it an image without a pyramid)."""
    if getattr(tiff, "sample_white", None) is not None or tiff.associated_image_names():
        return tiff
    if getattr(tiff, "truncated_at", None) is not None:
        return tiff
    slide = OpenSlideBackend(path)
    if microscope_mpp(slide.mpp) is None and microscope_mpp(tiff.mpp) is not None:
        slide.close()
        return tiff
    tiff.close()
    return slide


#: suffixes of vendor formats only OpenSlide reads in full (MPP, associated images): never a tifffile fallback
VENDOR_SUFFIXES = {
    ".svs": "Aperio SVS",
    ".ndpi": "Hamamatsu NDPI",
    ".scn": "Leica SCN",
    ".bif": "Ventana BIF",
    ".mrxs": "3DHISTECH MIRAX",
    ".vms": "Hamamatsu VMS",
    ".vmu": "Hamamatsu VMU",
    ".svslide": "Sakura SVSlide",
}


def _claims_vendor_format(path: Path) -> bool:
    """A vendor suffix on a TIFF (SVS, NDPI, ...) or on a MIRAX/VMS index file: only OpenSlide may read it."""
    suffix = path.suffix.lower()
    return suffix in VENDOR_SUFFIXES and (suffix in (".mrxs", ".vms", ".vmu") or _is_tiff(path))


def _openslide_refusal(path: Path, flavour: str) -> str:
    """Why OpenSlide rejects ``path`` (a file of a vendor format it reads), as a user message."""
    import openslide

    try:
        openslide.OpenSlide(str(path)).close()
        reason = "it opens only in part"
    except Exception as exc:  # OpenSlideError, OpenSlideUnsupportedFormatError
        reason = str(exc) or type(exc).__name__
    return (
        f"OpenSlide cannot read {path} ({flavour}, {path.stat().st_size:,} bytes): {reason}. The file is probably "
        "truncated or corrupt (copy it again); it is not read with tifffile instead, which would lose its "
        "MPP and associated images."
    )


def _check_path(path: Path) -> bool:
    """Refuse a missing, unreadable or non-regular path before anything opens it; True for a folder.

    A FIFO, socket or device would block or stream forever in OpenSlide's or tifffile's reads.

    Raises:
        WSIError: the path does not exist, may not be read by this user, is not a regular file/folder, or is an
            empty file.
    """
    try:
        st = path.stat()
        mode = st.st_mode
        if stat.S_ISDIR(mode):
            os.listdir(path)
            return True
        if not stat.S_ISREG(mode):
            raise WSIError(
                f"{path} is not a regular file ({_file_kind(mode)}); refusing to read it: a slide is a file "
                "or a DICOM folder."
            )
        with path.open("rb"):
            pass
        if st.st_size == 0:
            raise WSIError(f"{path} is empty (0 bytes): the copy or download that made it may have failed.")
        return False
    except FileNotFoundError:
        raise WSIError(f"{path} does not exist.") from None
    except PermissionError as exc:
        raise WSIError(permission_message(path, exc)) from exc


def _file_kind(mode: int) -> str:
    """'a FIFO', 'a socket', ... for a non-regular ``st_mode``."""
    kinds = {stat.S_ISFIFO: "a FIFO", stat.S_ISSOCK: "a socket", stat.S_ISCHR: "a character device",
             stat.S_ISBLK: "a block device"}  # fmt: skip
    for test, kind in kinds.items():
        if test(mode):
            return kind
    return "not a file"


def permission_message(path: Path, exc: PermissionError) -> str:
    """The user message for a slide this user may not read (never "not a whole-slide image")."""
    return (
        f"Permission denied reading {path} ({exc.strerror or exc}): the file exists but this user may not "
        "read it or its folder; check its permissions (ls -l) or ask the owner."
    )
