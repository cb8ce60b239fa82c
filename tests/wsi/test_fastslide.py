"""The optional fastslide backend: chosen per file, the same pixels as OpenSlide / tifffile on the shared slides
(within the JPEG decoders' rounding, measured here), white outside the slide, thread-safe, clear errors."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from napari_pathdistill.errors import WSIError
from napari_pathdistill.wsi import _fastslide_backend
from napari_pathdistill.wsi.pyramid import open_pyramid

pytest.importorskip("fastslide")


@pytest.fixture
def prefer_fastslide(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATHDISTILL_WSI_BACKEND", "fastslide")


def _whole_levels(path: Path) -> list[np.ndarray]:
    with open_pyramid(path) as pyr:
        return [pyr.read_region((0, 0), i, lv.shape[::-1]) for i, lv in enumerate(pyr.levels)]


def _diff(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    assert a.shape == b.shape
    return np.abs(a.astype(np.int16) - b.astype(np.int16))


def test_default_choice_keeps_openslide_and_tifffile_for_what_they_read(cmu_svs: Path, os2_pair) -> None:
    assert not _fastslide_backend.choose(cmu_svs)
    assert not _fastslide_backend.choose(os2_pair[0])
    assert _fastslide_backend.choose(Path("slide.vsi")) and _fastslide_backend.choose(Path("x.czi"))
    with open_pyramid(cmu_svs) as pyr:
        assert pyr.backend == "openslide"


def test_svs_pixels_match_openslide_within_jpeg_rounding(cmu_svs: Path, prefer_fastslide: None) -> None:
    with open_pyramid(cmu_svs) as pyr:
        assert pyr.backend == "fastslide"
        assert pyr.mpp == pytest.approx((0.499, 0.499))
        assert set(pyr.associated_image_names()) == {"label", "macro", "thumbnail"}
        assert pyr.read_associated("label").ndim == 3
        fast = [pyr.read_region((0, 0), i, lv.shape[::-1]) for i, lv in enumerate(pyr.levels)]
        dask0 = np.asarray(pyr.to_dask()[0])
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PATHDISTILL_WSI_BACKEND", "openslide")
        ref = _whole_levels(cmu_svs)
    d = _diff(fast[0], ref[0])
    # libjpeg-turbo's and fastslide's IDCTs differ by at most 2 grey levels on a minority-ish of pixels
    assert d.max() <= 2 and d.mean() < 1.0
    np.testing.assert_array_equal(dask0, fast[0])


def test_jpeg2000_svs_both_levels_and_no_mpp(tcga_svs: Path, prefer_fastslide: None) -> None:
    fast = _whole_levels(tcga_svs)
    with open_pyramid(tcga_svs) as pyr:
        assert pyr.backend == "fastslide" and pyr.mpp is None and len(pyr.levels) == 2
        assert pyr.levels[1].downsample == pytest.approx(2.0005, abs=1e-3)
        assert pyr.icc_profile and pyr.icc_profile[36:40] == b"acsp"  # its embedded ICC profile, as bytes
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PATHDISTILL_WSI_BACKEND", "openslide")
        ref = _whole_levels(tcga_svs)
    for a, b in zip(fast, ref, strict=True):
        assert _diff(a, b).max() <= 1


def test_ome_tiff_stays_on_tifffile_even_when_fastslide_is_preferred(
    os2_pair, prefer_fastslide: None
) -> None:
    # fastslide 0.8.1 decodes the OS-2 NDPI OME-TIFF's JFIF JPEG tiles (photometric RGB) as raw YCbCr: a salmon
    # background (median ~ (203, 133, 125)) where tifffile gives the grey-white glass (~ (199, 204, 214))
    assert not _fastslide_backend.choose(os2_pair[0])
    with open_pyramid(os2_pair[0]) as pyr:
        assert pyr.backend == "tifffile"
        glass = np.median(pyr.read_region((0, 0), 0, (2202, 2202)).reshape(-1, 3), axis=0)
    assert glass[2] > glass[0]  # bluish-white glass, not salmon


def test_dicom_folder_opens_close_to_openslide(cmu_dicom_dir: Path, prefer_fastslide: None) -> None:
    fast = _whole_levels(cmu_dicom_dir)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PATHDISTILL_WSI_BACKEND", "openslide")
        ref = _whole_levels(cmu_dicom_dir)
    d = _diff(fast[0], ref[0])
    # YCbCr 4:2:2 JPEG frames: the two decoders upsample chroma differently (max 48 at sharp colour edges)
    assert d.mean() < 2.5 and np.percentile(d, 99) <= 12


def test_reads_outside_the_slide_are_white_and_partial_reads_padded(
    cmu_svs: Path, prefer_fastslide: None
) -> None:
    with open_pyramid(cmu_svs) as pyr:
        w, h = pyr.dimensions
        edge = pyr.read_region((w - 20, h - 30), 0, (64, 64))
        inside = pyr.read_region((w - 20, h - 30), 0, (20, 30))
        assert edge.shape == (64, 64, 3)
        np.testing.assert_array_equal(edge[:30, :20], inside)
        assert (edge[30:] == 255).all() and (edge[:, 20:] == 255).all()
        assert (pyr.read_region((-100, -100), 0, (50, 50)) == 255).all()


def test_many_threads_read_the_single_thread_pixels(cmu_svs: Path, prefer_fastslide: None) -> None:
    rng = np.random.default_rng(0)
    with open_pyramid(cmu_svs) as pyr:
        w, h = pyr.dimensions
        spots = [(int(rng.integers(0, w - 224)), int(rng.integers(0, h - 224))) for _ in range(48)]
        ref = [pyr.read_region(s, 0, (224, 224)) for s in spots]
        with ThreadPoolExecutor(8) as pool:
            got = list(pool.map(lambda s: pyr.read_region(s, 0, (224, 224)), spots))
    for a, b in zip(got, ref, strict=True):
        np.testing.assert_array_equal(a, b)


def test_bad_preference_and_unreadable_file_are_clear(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = tmp_path / "slide.vsi"
    fake.write_bytes(b"not an Olympus file" * 100)
    monkeypatch.setenv("PATHDISTILL_WSI_BACKEND", "bogus")
    with pytest.raises(WSIError, match="not one of auto, fastslide, openslide"):
        open_pyramid(fake)
    monkeypatch.delenv("PATHDISTILL_WSI_BACKEND")
    with pytest.raises(WSIError, match=r"fastslide cannot read .*slide\.vsi"):
        open_pyramid(fake)


def test_vsi_without_fastslide_says_how_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = tmp_path / "slide.czi"
    fake.write_bytes(b"\0" * 1000)
    monkeypatch.setattr(_fastslide_backend, "available", lambda: False)
    with pytest.raises(WSIError, match="pip install fastslide"):
        open_pyramid(fake)
