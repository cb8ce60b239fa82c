"""TILED_SPARSE frame positions are read from the per-frame sequence's raw bytes (``wsi._dicom_positions``), the
same as the parsed sequence gives, without a pydicom Dataset per frame: the TCGA-layout series OpenSlide refuses
(column-major TILED_SPARSE, no ImageType) took 6 s to open at 16,384 frames (about 45 s at a 40x slide's 120k);
0.3 s now. Several focal planes, or a sequence already parsed, take the parsed walk as before."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataelem import RawDataElement
from pydicom.uid import ImplicitVRLittleEndian

from _dicom_files import write_dicom_wsi
from napari_pathdistill.wsi._dicom_frames import frame_positions
from napari_pathdistill.wsi._dicom_positions import PER_FRAME_TAG, raw_positions
from napari_pathdistill.wsi.pyramid import open_pyramid

TILE = (48, 40)


def _source(cmu_rgb: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(cmu_rgb[1200:1400, 600:900])  # 200 x 300 of real tissue: 5 x 8 frames


def _parsed_positions(path: Path) -> list[tuple[int, int, int]]:
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    assert len(ds.PerFrameFunctionalGroupsSequence)  # parsed: frame_positions walks the Datasets
    return frame_positions(ds, int(ds.NumberOfFrames))


def _implicit_copy(path: Path, dst: Path) -> Path:
    ds = pydicom.dcmread(path)
    ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    ds.save_as(dst, implicit_vr=True, little_endian=True, enforce_file_format=True)
    return dst


@pytest.mark.parametrize("implicit", [False, True])
def test_sparse_positions_come_from_the_raw_bytes_as_parsed(
    tmp_path: Path, cmu_rgb: np.ndarray, implicit: bool
) -> None:
    src = _source(cmu_rgb)
    path = write_dicom_wsi(tmp_path / "s.dcm", src, TILE, order="column", sparse=True, image_type=None,
                           drop=[(0, 0), (2, 3)])  # fmt: skip
    if implicit:
        path = _implicit_copy(path, tmp_path / "implicit.dcm")
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    assert ds.get_item(PER_FRAME_TAG).is_implicit_VR is implicit
    got = frame_positions(ds, int(ds.NumberOfFrames))
    assert isinstance(ds.get_item(PER_FRAME_TAG), RawDataElement)  # before: parsed, one Dataset per frame
    assert got == _parsed_positions(path) and len(got) == 5 * 8 - 2
    with open_pyramid(path) as pyr:  # the slide reads its source back, the dropped cells white
        rgb = pyr.read_region((0, 0), 0, (300, 200))
    expected = src.copy()
    expected[0:48, 0:40] = expected[96:144, 120:160] = 255
    np.testing.assert_array_equal(rgb, expected)


def test_several_focal_planes_take_the_parsed_walk(tmp_path: Path, cmu_rgb: np.ndarray) -> None:
    src = _source(cmu_rgb)
    path = write_dicom_wsi(tmp_path / "z.dcm", src, TILE, order="column", sparse=True, image_type=None,
                           other_plane=255 - src)  # fmt: skip
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    assert raw_positions(ds, int(ds.NumberOfFrames)) is None
    got = frame_positions(ds, int(ds.NumberOfFrames))
    assert len(got) == 5 * 8 and got == _parsed_positions(path)
    with open_pyramid(path) as pyr:  # the first plane only
        np.testing.assert_array_equal(pyr.read_region((0, 0), 0, (300, 200)), src)
