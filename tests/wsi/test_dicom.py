"""DICOM WSI backend: files written here (row-/column-major frames, TILED_FULL/SPARSE, uncompressed, JPEG
baseline, lossless JPEG 2000) read back equal to their source, and the real CMU DICOM series reads the same
pixels as OpenSlide's, also re-stored the way OpenSlide refuses (the TCGA frozen-section layout).
"""

from __future__ import annotations

import io
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import openslide
import pydicom
import pytest
from PIL import Image

from _dicom_files import TCGA_ORIENTATION, rewrite_volume, split_concatenation, tile_grid, write_dicom_wsi
from napari_pathdistill._reader import get_reader, read_slide
from napari_pathdistill.errors import WSIError
from napari_pathdistill.wsi import _dicom_frames
from napari_pathdistill.wsi._backend_utils import composite_rgba
from napari_pathdistill.wsi._dicom_backend import DicomBackend
from napari_pathdistill.wsi._openslide_backend import OpenSlideBackend
from napari_pathdistill.wsi.pyramid import open_pyramid

TILE = (96, 80)  # (rows, columns): not square, not dividing the image, so edge frames are clipped


def _source(cmu_rgb: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(cmu_rgb[1000:1250, 700:1030])  # 250 x 330 of real tissue


def _volume_file(folder: Path) -> Path:
    return next(
        f
        for f in sorted(folder.iterdir())
        if pydicom.dcmread(f, stop_before_pixels=True).ImageType[2] == "VOLUME"
    )


def _openslide_rgb(slide: openslide.OpenSlide, loc: tuple[int, int], size: tuple[int, int]) -> np.ndarray:
    """OpenSlide's RGBA on white, as every backend returns (outside the slide is transparent there)."""
    return composite_rgba(np.asarray(slide.read_region(loc, 0, size)))


@pytest.mark.parametrize("codec", ["native", "j2k"])
@pytest.mark.parametrize(("order", "sparse"), [("row", False), ("row", True), ("column", True)])
def test_lossless_frames_read_back_equal_to_source(
    tmp_path: Path, cmu_rgb: np.ndarray, codec: str, order: str, sparse: bool
) -> None:
    src = _source(cmu_rgb)
    path = write_dicom_wsi(tmp_path / "s.dcm", src, TILE, codec=codec, order=order, sparse=sparse)
    with open_pyramid(path) as pyr:
        assert pyr.levels[0].shape == src.shape[:2] and pyr.levels[0].tile_shape == TILE
        assert pyr.mpp == pytest.approx((0.5, 0.5))
        np.testing.assert_array_equal(pyr.read_region((0, 0), 0, (330, 250)), src)
        np.testing.assert_array_equal(pyr.to_dask()[0].compute(), src)
        np.testing.assert_array_equal(pyr.read_region((75, 90), 0, (100, 120)), src[90:210, 75:175])


@pytest.mark.parametrize(("order", "codec"), [("row", "jpeg"), ("column", "jpeg"), ("column", "jpeg-rgb")])
def test_jpeg_baseline_frames_equal_each_tile_decoded_alone(
    tmp_path: Path, cmu_rgb: np.ndarray, order: str, codec: str
) -> None:
    """Lossy, so the reference is every frame decoded by Pillow on its own and placed at its grid cell.

    ``jpeg-rgb``: PhotometricInterpretation RGB, a JPEG without colour transform (as OpenSlide decodes it).
    """
    src = _source(cmu_rgb)
    path = write_dicom_wsi(tmp_path / "j.dcm", src, TILE, codec=codec, order=order, sparse=order == "column",
                           image_type=None, orientation=TCGA_ORIENTATION)  # fmt: skip
    ds = pydicom.dcmread(path)
    frames = list(pydicom.encaps.generate_frames(ds.PixelData, number_of_frames=int(ds.NumberOfFrames)))
    th, tw = TILE
    expected = np.zeros((-(-250 // th) * th, -(-330 // tw) * tw, 3), np.uint8)
    for (r, c), data in zip(tile_grid(src.shape[:2], TILE, order), frames):
        expected[r * th : (r + 1) * th, c * tw : (c + 1) * tw] = np.asarray(Image.open(io.BytesIO(data)))
    with open_pyramid(path) as pyr:
        assert pyr.backend == "dicom"
        got = pyr.read_region((0, 0), 0, (330, 250))
    np.testing.assert_array_equal(got, expected[:250, :330])
    assert np.abs(got.astype(int) - src).mean() < 8  # the source up to JPEG loss (tiles swapped: > 30)


def test_missing_sparse_frames_read_white(tmp_path: Path, cmu_rgb: np.ndarray) -> None:
    src = _source(cmu_rgb)
    path = write_dicom_wsi(tmp_path / "m.dcm", src, TILE, order="column", sparse=True, drop=[(1, 2), (0, 0)])
    with open_pyramid(path) as pyr:
        got = pyr.read_region((0, 0), 0, (330, 250))
    expected = src.copy()
    expected[96:192, 160:240] = 255
    expected[0:96, 0:80] = 255
    np.testing.assert_array_equal(got, expected)


def test_concatenation_parts_form_one_level(tmp_path: Path, cmu_rgb: np.ndarray) -> None:
    src = _source(cmu_rgb)
    parts = split_concatenation(write_dicom_wsi(tmp_path / "c.dcm", src, TILE), first=7)
    assert [int(pydicom.dcmread(p).NumberOfFrames) for p in parts] == [7, 8]
    backend = DicomBackend(tmp_path)
    try:
        assert len(backend.levels) == 1
        np.testing.assert_array_equal(backend.read_level(0, 0, 0, 330, 250), src)
    finally:
        backend.close()


def test_frames_of_a_second_focal_plane_are_not_mixed_in(tmp_path: Path, cmu_rgb: np.ndarray) -> None:
    src = _source(cmu_rgb)
    path = write_dicom_wsi(tmp_path / "z.dcm", src, TILE, order="column", sparse=True, other_plane=255 - src)
    assert int(pydicom.dcmread(path).NumberOfFrames) == 30  # 15 cells, two planes interleaved
    with open_pyramid(path) as pyr:
        np.testing.assert_array_equal(pyr.read_region((0, 0), 0, (330, 250)), src)


def test_folder_series_levels_and_associated_images(tmp_path: Path, cmu_rgb: np.ndarray) -> None:
    src = _source(cmu_rgb)
    half = np.ascontiguousarray(src[::2, ::2])
    uid = pydicom.uid.generate_uid()
    write_dicom_wsi(tmp_path / "a_half.dcm", half, (64, 64), order="column", sparse=True, series_uid=uid)
    write_dicom_wsi(tmp_path / "b_full.dcm", src, TILE, codec="j2k", series_uid=uid, mpp=0.25)
    write_dicom_wsi(tmp_path / "c_label.dcm", src[:60, :90], (60, 90), series_uid=uid,
                    image_type=("ORIGINAL", "PRIMARY", "LABEL", "NONE"))  # fmt: skip
    write_dicom_wsi(tmp_path / "d_other_series.dcm", src[:64, :64], (64, 64),
                    image_type=("ORIGINAL", "PRIMARY", "THUMBNAIL", "RESAMPLED"))  # fmt: skip
    backend = DicomBackend(tmp_path)
    try:
        assert [lv.shape for lv in backend.levels] == [(250, 330), (125, 165)]
        assert [lv.tile_shape for lv in backend.levels] == [TILE, (64, 64)]
        assert backend.levels[1].downsample == 2.0 and backend.mpp == pytest.approx((0.25, 0.25))
        np.testing.assert_array_equal(backend.read_level(0, 0, 0, 330, 250), src)
        np.testing.assert_array_equal(backend.read_level(1, 0, 0, 165, 125), half)
        np.testing.assert_array_equal(backend.read_region((100, 50), 1, (40, 30)), half[25:55, 50:90])
        assert backend.associated_image_names() == ["label"]  # the thumbnail is of another series
        np.testing.assert_array_equal(backend.read_associated("label"), src[:60, :90])
        with pytest.raises(WSIError, match="No associated image 'macro'; this slide has: label"):
            backend.read_associated("macro")
    finally:
        backend.close()


def test_real_series_matches_openslide(cmu_dicom_dir: Path) -> None:
    """The backend itself on the folder OpenSlide reads: same pixels, MPP, associated images."""
    backend = DicomBackend(cmu_dicom_dir)
    slide = openslide.OpenSlide(str(_volume_file(cmu_dicom_dir)))
    try:
        assert [lv.shape for lv in backend.levels] == [(2967, 2220)] and backend.levels[0].tile_shape == (
            240,
            240,
        )
        assert backend.mpp == pytest.approx((0.499, 0.499))
        for loc, size in [((0, 0), (2220, 2967)), ((1000, 1500), (333, 257)), ((2100, 2900), (300, 200))]:
            np.testing.assert_array_equal(backend.read_region(loc, 0, size), _openslide_rgb(slide, loc, size))
        assert (
            backend.associated_image_names()
            == sorted(slide.associated_images)
            == ["label", "macro", "thumbnail"]
        )
        for name, img in slide.associated_images.items():
            np.testing.assert_array_equal(backend.read_associated(name), np.asarray(img.convert("RGB")))
    finally:
        backend.close()
        slide.close()


def _tcga_like_folder(cmu_dicom_dir: Path, dst: Path, drop: list[tuple[int, int]] | None = None) -> Path:
    """The CMU series with its VOLUME re-stored as TCGA's: column-major TILED_SPARSE, no ImageType."""
    dst.mkdir()
    volume = _volume_file(cmu_dicom_dir)
    for f in cmu_dicom_dir.iterdir():
        if f != volume:
            shutil.copyfile(f, dst / f.name)
    rewrite_volume(volume, dst / "volume.dcm", order="column", sparse=True, image_type=None,
                   orientation=TCGA_ORIENTATION, drop=drop or [])  # fmt: skip
    return dst


def test_tcga_layout_openslide_refuses_is_read_like_the_original(tmp_path: Path, cmu_dicom_dir: Path) -> None:
    folder = _tcga_like_folder(cmu_dicom_dir, tmp_path / "tcga")
    with pytest.raises(openslide.OpenSlideError, match=r"image flavor|ImageType"):
        openslide.OpenSlide(str(folder / "volume.dcm"))
    with pytest.raises(WSIError):
        OpenSlideBackend(folder)
    original = openslide.OpenSlide(str(_volume_file(cmu_dicom_dir)))
    try:
        for path in (folder, folder / "volume.dcm"):
            assert get_reader(str(path)) is read_slide
            with open_pyramid(path) as pyr:
                assert pyr.backend == "dicom" and pyr.mpp == pytest.approx((0.499, 0.499))
                assert pyr.properties["dicom.DimensionOrganizationType"] == "TILED_SPARSE"
                assert pyr.properties["dicom.ImageOrientationSlide"] == "0.0\\-1.0\\0.0\\-1.0\\0.0\\0.0"
                np.testing.assert_array_equal(
                    pyr.to_dask()[0].compute(), _openslide_rgb(original, (0, 0), (2220, 2967))
                )
        with open_pyramid(folder) as pyr:
            assert pyr.associated_image_names() == ["label", "macro", "thumbnail"]
            np.testing.assert_array_equal(
                pyr.read_associated("macro"), np.asarray(original.associated_images["macro"].convert("RGB"))
            )
    finally:
        original.close()


def test_frames_are_decoded_lazily_and_reads_are_thread_safe(
    tmp_path: Path, cmu_dicom_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = _tcga_like_folder(cmu_dicom_dir, tmp_path / "tcga", drop=[(3, 4)])
    decoded: list[int] = []
    real_read = _dicom_frames.InstanceFrames.read
    monkeypatch.setattr(
        _dicom_frames.InstanceFrames, "read", lambda self, i: decoded.append(i) or real_read(self, i)
    )
    with open_pyramid(folder) as pyr:
        assert decoded == []  # opening decodes nothing
        assert (
            pyr.read_region((4 * 240, 3 * 240), 0, (240, 240)) == 255
        ).all() and decoded == []  # missing: white
        pyr.read_region((5, 5), 0, (10, 10))
        assert len(decoded) == 1
        boxes = [((x, y), (300, 260)) for x in range(0, 2200, 170) for y in range(0, 2900, 410)]
        serial = [pyr.read_region(loc, 0, size) for loc, size in boxes]
        with ThreadPoolExecutor(8) as pool:
            threaded = list(pool.map(lambda b: pyr.read_region(b[0], 0, b[1]), boxes * 3))
    for i, img in enumerate(threaded):
        np.testing.assert_array_equal(img, serial[i % len(boxes)])


def test_folder_without_volume_names_what_it_holds(tmp_path: Path, cmu_dicom_dir: Path) -> None:
    folder = tmp_path / "no_volume"
    folder.mkdir()
    volume = _volume_file(cmu_dicom_dir)
    for f in cmu_dicom_dir.iterdir():
        if f != volume:
            shutil.copyfile(f, folder / f.name)
    expected = (
        r"has no VOLUME instance .* holds only: LABEL \(1 file\), OVERVIEW \(1 file\), THUMBNAIL \(1 file\)"
    )
    with pytest.raises(WSIError, match=expected) as info:
        open_pyramid(folder)
    assert "truncated" not in str(info.value) and "corrupt" not in str(info.value)
    assert get_reader(str(folder)) is read_slide  # napari shows this message, not "no reader"
    with pytest.raises(WSIError, match="has no VOLUME instance"):
        read_slide(str(folder))


def test_truncated_volume_says_truncated(tmp_path: Path, cmu_dicom_dir: Path) -> None:
    """The backend itself: OpenSlide (libdicom trusts the offset table) opens this file and fails on reads."""
    data = _volume_file(cmu_dicom_dir).read_bytes()
    path = tmp_path / "cut.dcm"
    path.write_bytes(data[: int(len(data) * 0.6)])
    with pytest.raises(WSIError, match=r"cut\.dcm: its pixel data runs past the end .* truncated"):
        DicomBackend(path)
    path.write_bytes(data[:2000])  # inside the header
    with pytest.raises(WSIError, match=r"cut\.dcm .*(truncated or corrupt)"):
        open_pyramid(path)


def test_non_wsi_dicom_is_named(tmp_path: Path, cmu_dicom_dir: Path) -> None:
    ds = pydicom.dcmread(_volume_file(cmu_dicom_dir))
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = pydicom.uid.CTImageStorage
    ds.save_as(tmp_path / "ct.dcm")
    with pytest.raises(
        WSIError, match=r"ct\.dcm is a DICOM file but not a whole-slide image \(CT Image Storage\)"
    ):
        open_pyramid(tmp_path / "ct.dcm")
