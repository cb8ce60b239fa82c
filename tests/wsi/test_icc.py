"""ICC profile -> sRGB (opt-in): the real TCGA SVS (sRGB profile) and TIFFs written with a non-sRGB profile."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import ImageCms

from _icc_files import imagecms_srgb, srgb_profile_of, swap_primaries, write_icc_tiff
from napari_pathdistill.errors import WSIError
from napari_pathdistill.wsi import open_pyramid
from napari_pathdistill.wsi.metadata import slide_metadata


@pytest.fixture(scope="module")
def srgb_profile(tcga_svs: Path) -> bytes:
    """The real 'sRGB IEC61966-2.1' profile (3144 bytes) the TCGA SVS embeds (TIFF tag 34675)."""
    return srgb_profile_of(tcga_svs)


@pytest.fixture(scope="module")
def cmu_crop(cmu_rgb: np.ndarray) -> np.ndarray:
    """A 700 x 600 crop of CMU-1 level 0: real H&E colours."""
    return np.ascontiguousarray(cmu_rgb[1000:1700, 800:1400])


def test_tcga_svs_profile_is_its_tiff_tag_and_cmu_has_none(
    tcga_svs: Path, cmu_svs: Path, srgb_profile: bytes
) -> None:
    with open_pyramid(tcga_svs) as pyr:
        assert pyr.icc_profile == srgb_profile and len(srgb_profile) == 3144
        assert pyr.color == "raw"
        assert slide_metadata(pyr).icc_profile == "sRGB IEC61966-2.1"
    with open_pyramid(cmu_svs) as pyr:
        assert pyr.icc_profile is None
        assert pyr.use_srgb() is False and pyr.color == "raw"  # nothing to convert with


def test_srgb_profile_to_srgb_is_identity_on_the_real_slide(tcga_svs: Path) -> None:
    with open_pyramid(tcga_svs) as raw, open_pyramid(tcga_svs, color="srgb") as conv:
        assert conv.color == "srgb"
        a, b = raw.to_dask()[1][:700, :900].compute(), conv.to_dask()[1][:700, :900].compute()
        diff = np.abs(a.astype(int) - b.astype(int))
        assert diff.max() <= 1
        assert a.std() > 10  # real tissue, not a blank corner
        r = conv.read_region((1000, 1000), 0, (300, 200))
        assert np.abs(r.astype(int) - raw.read_region((1000, 1000), 0, (300, 200))).max() <= 1


def test_wide_profile_converted_exactly_as_imagecms_does(
    tmp_path: Path, cmu_crop: np.ndarray, srgb_profile: bytes
) -> None:
    wide = swap_primaries(srgb_profile)
    path = write_icc_tiff(tmp_path / "wide.tif", cmu_crop, wide)
    with open_pyramid(path) as raw:
        assert raw.backend == "tifffile" and raw.icc_profile == wide
        np.testing.assert_array_equal(raw.to_dask()[0].compute(), cmu_crop)  # default: raw pixels
    expected = imagecms_srgb(cmu_crop, wide)
    assert np.abs(expected.astype(int) - cmu_crop).mean() > 10  # the profile really changes colours
    with open_pyramid(path, color="srgb") as pyr:
        levels = pyr.to_dask()
        np.testing.assert_array_equal(levels[0].compute(), expected)
        np.testing.assert_array_equal(levels[1].compute(), imagecms_srgb(cmu_crop[::2, ::2].copy(), wide))
        np.testing.assert_array_equal(pyr.read_region((130, 70), 0, (200, 150)), expected[70:220, 130:330])
        thumb, _ = pyr.thumbnail(max_size=350)
        np.testing.assert_array_equal(thumb, levels[1].compute())


def test_use_srgb_after_to_dask_gives_new_converted_arrays(
    tmp_path: Path, cmu_crop: np.ndarray, srgb_profile: bytes
) -> None:
    wide = swap_primaries(srgb_profile)
    with open_pyramid(write_icc_tiff(tmp_path / "w.tif", cmu_crop, wide)) as pyr:
        before = pyr.to_dask()[0]
        np.testing.assert_array_equal(before.compute(), cmu_crop)  # decoded and cached raw
        assert pyr.use_srgb() is True
        after = pyr.to_dask()[0]
        assert after.name != before.name
        np.testing.assert_array_equal(after.compute(), imagecms_srgb(cmu_crop, wide))


def test_conversion_is_thread_safe(
    tmp_path: Path, cmu_crop: np.ndarray, srgb_profile: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATHDISTILL_CHUNK_CACHE_MB", "0")  # every read decodes and converts again
    wide = swap_primaries(srgb_profile)
    expected = imagecms_srgb(cmu_crop, wide)
    rng = np.random.default_rng(0)
    boxes = [
        (int(rng.integers(0, 500)), int(rng.integers(0, 600)), int(rng.integers(20, 100))) for _ in range(400)
    ]
    errors: list[str] = []
    with open_pyramid(write_icc_tiff(tmp_path / "t.tif", cmu_crop, wide), color="srgb") as pyr:

        def work(part: list[tuple[int, int, int]]) -> None:
            for x, y, s in part:
                got = pyr.read_region((x, y), 0, (s, s))
                want = expected[y : y + s, x : x + s]
                if not np.array_equal(got[: want.shape[0], : want.shape[1]], want):
                    errors.append(f"region {(x, y, s)} differs")

        threads = [threading.Thread(target=work, args=(boxes[i::16],)) for i in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert errors == []


def test_damaged_or_non_rgb_profile(tmp_path: Path, cmu_crop: np.ndarray, srgb_profile: bytes) -> None:
    broken = write_icc_tiff(tmp_path / "broken.tif", cmu_crop, srgb_profile[:200])
    with open_pyramid(broken) as pyr:  # raw reading is unaffected
        assert slide_metadata(pyr).icc_profile == "unreadable"
        np.testing.assert_array_equal(pyr.read_region((0, 0), 0, (64, 64)), cmu_crop[:64, :64])
    with pytest.raises(WSIError, match=r"broken\.tif: its embedded ICC profile \(200 bytes\) cannot be read"):
        open_pyramid(broken, color="srgb")
    lab = ImageCms.ImageCmsProfile(ImageCms.createProfile("LAB")).tobytes()
    with pytest.raises(WSIError, match=r"lab\.tif: its embedded ICC profile describes Lab colour, not RGB"):
        open_pyramid(write_icc_tiff(tmp_path / "lab.tif", cmu_crop, lab), color="srgb")
    with pytest.raises(ValueError, match="color must be 'raw' or 'srgb'"):
        open_pyramid(broken, color="adobe")


def test_model_tiles_are_converted_when_asked(
    tmp_path: Path, cmu_crop: np.ndarray, srgb_profile: bytes
) -> None:
    from napari_pathdistill.wsi import make_tile_grid, read_tiles

    wide = swap_primaries(srgb_profile)
    path = write_icc_tiff(tmp_path / "tiles.tif", cmu_crop, wide, mpp=0.5)
    expected = imagecms_srgb(cmu_crop, wide)
    with open_pyramid(path, color="srgb") as pyr:
        grid = make_tile_grid(pyr, tile_px=128, mpp=0.5, min_tissue=0.0)
        tiles = read_tiles(pyr, grid, range(len(grid)))
    assert len(grid) == 20  # 4 x 5 tiles of 128 px at the file's own 0.5 um/px: read as they are
    for tile, (x, y) in zip(tiles, grid.coords, strict=True):
        np.testing.assert_array_equal(tile, expected[y : y + 128, x : x + 128])
