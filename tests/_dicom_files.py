"""Write DICOM WSI test files (VL Whole Slide Microscopy Image) with pydicom.

``write_dicom_wsi`` tiles an (h, w, 3) uint8 array into frames (uncompressed, JPEG baseline or lossless
JPEG 2000), stored row- or column-major, TILED_FULL or TILED_SPARSE; ``rewrite_volume`` re-stores the frames of
a real DICOM file (their compressed bytes untouched) in another order/organisation.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate, generate_frames
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import ExplicitVRLittleEndian, JPEG2000Lossless, JPEGBaseline8Bit, generate_uid

WSI_SOP = "1.2.840.10008.5.1.4.1.1.77.1.6"
VOLUME_TYPE = ("ORIGINAL", "PRIMARY", "VOLUME", "NONE")
#: the TCGA frozen-section case OpenSlide refuses: rows run along -y, columns along -x
TCGA_ORIENTATION = (0, -1, 0, -1, 0, 0)


def tile_grid(shape: tuple[int, int], tile: tuple[int, int], order: str) -> list[tuple[int, int]]:
    """(tile row, tile column) of every tile, row-major (``"row"``) or column-major (``"column"``)."""
    down, across = -(-shape[0] // tile[0]), -(-shape[1] // tile[1])
    cells = [(r, c) for r in range(down) for c in range(across)]
    return sorted(cells, key=lambda rc: (rc[1], rc[0])) if order == "column" else cells


def _encode(tile: np.ndarray, codec: str) -> bytes:
    import imagecodecs

    if codec == "jpeg":
        return imagecodecs.jpeg8_encode(tile, level=90)
    if codec == "jpeg-rgb":  # no colour transform (PhotometricInterpretation RGB)
        return imagecodecs.jpeg8_encode(tile, level=90, colorspace="RGB", outcolorspace="RGB")
    if codec == "j2k":
        return imagecodecs.jpeg2k_encode(tile, level=0, codecformat="J2K", reversible=True)
    return np.ascontiguousarray(tile).tobytes()


def write_dicom_wsi(
    path: Path,
    image: np.ndarray,
    tile: tuple[int, int] = (64, 64),
    *,
    codec: str = "native",
    order: str = "row",
    sparse: bool = False,
    image_type: Sequence[str] | None = VOLUME_TYPE,
    orientation: Sequence[float] = (0, 1, 0, 1, 0, 0),
    mpp: float | None = 0.5,
    drop: Sequence[tuple[int, int]] = (),
    series_uid: str | None = None,
    other_plane: np.ndarray | None = None,
) -> Path:
    """Write ``image`` (h, w, 3) uint8 as a one-instance DICOM WSI; edge tiles are padded with white.

    ``drop``: (tile row, tile column) cells left out (only with ``sparse``: they must read white).
    ``other_plane``: with ``sparse``, a second focal plane (Z 0.002 mm) whose frames follow each of the first.
    """
    th, tw = tile
    h, w = image.shape[:2]
    cells = [rc for rc in tile_grid((h, w), tile, order) if rc not in set(drop)]
    planes = [image] if other_plane is None else [image, other_plane]
    frames, origins = [], []
    for r, c in cells:
        for z, plane in enumerate(planes):
            block = np.full((th, tw, 3), 255, np.uint8)
            part = plane[r * th : (r + 1) * th, c * tw : (c + 1) * tw]
            block[: part.shape[0], : part.shape[1]] = part
            frames.append(_encode(block, codec))
            origins.append((r * th, c * tw, z * 0.002))
    syntax = {"native": ExplicitVRLittleEndian, "j2k": JPEG2000Lossless}.get(codec, JPEGBaseline8Bit)
    ds = _base_dataset(syntax, series_uid, image_type, orientation, mpp)
    photometric = {"native": "RGB", "jpeg": "YBR_FULL_422", "jpeg-rgb": "RGB", "j2k": "YBR_RCT"}
    ds.PhotometricInterpretation = photometric[codec]
    ds.Rows, ds.Columns, ds.TotalPixelMatrixRows, ds.TotalPixelMatrixColumns = th, tw, h, w
    ds.TotalPixelMatrixFocalPlanes = len(planes)
    _set_frames(ds, frames, origins, sparse, encapsulated=codec != "native")
    ds.save_as(path, enforce_file_format=True)
    return path


def rewrite_volume(
    src: Path,
    dst: Path,
    *,
    order: str = "column",
    sparse: bool = True,
    image_type: Sequence[str] | None = None,
    orientation: Sequence[float] = TCGA_ORIENTATION,
    drop: Sequence[tuple[int, int]] = (),
) -> Path:
    """Re-store a TILED_FULL file's frames (bytes unchanged) in ``order``; ImageType None removes it."""
    ds = pydicom.dcmread(src)
    th, tw = int(ds.Rows), int(ds.Columns)
    shape = (int(ds.TotalPixelMatrixRows), int(ds.TotalPixelMatrixColumns))
    across = -(-shape[1] // tw)
    stored = list(generate_frames(ds.PixelData, number_of_frames=int(ds.NumberOfFrames)))
    cells = [rc for rc in tile_grid(shape, (th, tw), order) if rc not in set(drop)]
    frames = [stored[r * across + c] for r, c in cells]
    _set_image_type(ds, image_type)
    ds.ImageOrientationSlide = list(orientation)
    del ds.PixelData
    _set_frames(ds, frames, [(r * th, c * tw, 0.0) for r, c in cells], sparse, encapsulated=True)
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.save_as(dst, enforce_file_format=True)
    return dst


def _base_dataset(
    syntax: str, series_uid: str | None, image_type: Sequence[str] | None, orientation: Sequence[float],
    mpp: float | None,
) -> Dataset:  # fmt: skip
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = WSI_SOP
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = syntax
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = WSI_SOP, meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), series_uid or generate_uid()
    ds.Modality, ds.SamplesPerPixel, ds.PlanarConfiguration = "SM", 3, 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.ImageOrientationSlide = list(orientation)
    ds.TotalPixelMatrixFocalPlanes = 1
    _set_image_type(ds, image_type)
    shared = Dataset()
    if mpp:
        measures = Dataset()
        measures.PixelSpacing = [mpp * 1e-3, mpp * 1e-3]
        measures.SliceThickness = 0.001
        shared.PixelMeasuresSequence = DicomSequence([measures])
    ds.SharedFunctionalGroupsSequence = DicomSequence([shared])
    return ds


def _set_image_type(ds: Dataset, image_type: Sequence[str] | None) -> None:
    if image_type is None:
        ds.pop("ImageType", None)
        for shared in ds.get("SharedFunctionalGroupsSequence", []):
            shared.pop("WholeSlideMicroscopyImageFrameTypeSequence", None)
    else:
        ds.ImageType = list(image_type)


def _set_frames(
    ds: Dataset,
    frames: list[bytes],
    origins: list[tuple[int, int, float]],
    sparse: bool,
    *,
    encapsulated: bool,
) -> None:
    """Pixel Data, NumberOfFrames and, for TILED_SPARSE, each frame's 1-based position (and Z) in the matrix."""
    ds.NumberOfFrames = len(frames)
    ds.DimensionOrganizationType = "TILED_SPARSE" if sparse else "TILED_FULL"
    if sparse:
        items = []
        for y, x, z in origins:
            pos = Dataset()
            pos.ColumnPositionInTotalImagePixelMatrix, pos.RowPositionInTotalImagePixelMatrix = x + 1, y + 1
            pos.XOffsetInSlideCoordinateSystem, pos.YOffsetInSlideCoordinateSystem = x * 5e-4, y * 5e-4
            pos.ZOffsetInSlideCoordinateSystem = z
            item = Dataset()
            item.PlanePositionSlideSequence = DicomSequence([pos])
            items.append(item)
        ds.PerFrameFunctionalGroupsSequence = DicomSequence(items)
    else:
        ds.pop("PerFrameFunctionalGroupsSequence", None)
    if encapsulated:
        ds.PixelData = encapsulate(frames, has_bot=True)
        ds["PixelData"].VR = "OB"
        ds["PixelData"].is_undefined_length = True
    else:
        ds.PixelData = b"".join(frames)
        ds["PixelData"].VR = "OB"


def split_concatenation(path: Path, first: int) -> list[Path]:
    """Split a TILED_FULL file into two concatenation parts (frames [0, first) and the rest); removes it."""
    ds = pydicom.dcmread(path)
    n = int(ds.NumberOfFrames)
    frames = [f.tobytes() for f in np.split(np.frombuffer(ds.PixelData, np.uint8), n)]
    source, concatenation = ds.SOPInstanceUID, generate_uid()
    out = []
    for part, (lo, hi) in enumerate([(0, first), (first, n)], start=1):
        piece = pydicom.dcmread(path)
        piece.SOPInstanceUID = piece.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        piece.SOPInstanceUIDOfConcatenationSource, piece.ConcatenationUID = source, concatenation
        piece.InConcatenationNumber, piece.InConcatenationTotalNumber = part, 2
        piece.ConcatenationFrameOffsetNumber = lo
        piece.NumberOfFrames, piece.PixelData = hi - lo, b"".join(frames[lo:hi])
        out.append(path.with_name(f"{path.stem}_part{part}.dcm"))
        piece.save_as(out[-1], enforce_file_format=True)
    path.unlink()
    return out
