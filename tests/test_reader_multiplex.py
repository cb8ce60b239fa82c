"""The reader on multiplex immunofluorescence files: one multiscale layer per channel (names, colours, um,
lazy native-dtype levels), in layer data and in a real napari viewer; brightfield OME-TIFF stays one RGB layer."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from _multiplex_files import COLOURS, MPP, NAMES, channel_levels, write_ome_multiplex, write_qptiff
from napari_pathdistill._reader import CHANNEL_COLORMAPS, get_reader, read_slide


@pytest.fixture(params=["ome", "qptiff", "renamed"])
def written(request, tmp_path) -> tuple[Path, list[np.ndarray]]:
    """(a 4-channel uint16 pyramid file, its levels (C, h, w)) in one of the three layouts."""
    levels = channel_levels("uint16", seed=3)
    if request.param == "ome":
        return write_ome_multiplex(tmp_path / "mx.ome.tif", levels), levels
    qp = write_qptiff(tmp_path / "mx.qptiff", levels)
    return (qp if request.param == "qptiff" else Path(shutil.copy(qp, tmp_path / "renamed.tif"))), levels


def test_one_layer_per_channel(written) -> None:
    path, levels = written
    assert get_reader(str(path)) is read_slide
    layers = read_slide(str(path))
    assert [kw["name"] for _, kw, _ in layers] == list(NAMES)
    for c, (data, kw, kind) in enumerate(layers):
        assert kind == "image" and kw["multiscale"] and not kw["rgb"] and kw["blending"] == "additive"
        assert kw["scale"] == pytest.approx((MPP, MPP)) and kw["units"] == ("um", "um")
        assert kw["colormap"]["colors"][-1] == pytest.approx([v / 255 for v in COLOURS[c]] + [1.0])
        assert kw["metadata"]["pathdistill"]["path"] == str(path)
        assert kw["metadata"]["pathdistill"]["channel_name"] == NAMES[c]
        assert len(data) == len(levels)
        for arr, want in zip(data, levels, strict=True):
            assert arr.dtype == np.uint16 and arr.shape == want.shape[1:]
            np.testing.assert_array_equal(arr.compute(), want[c])
        lo, hi = np.percentile(levels[-1][c], [0.5, 99.9])
        assert kw["contrast_limits"] == pytest.approx((lo, hi))


def test_channels_without_colour_get_the_default_cycle(tmp_path: Path) -> None:
    path = write_ome_multiplex(tmp_path / "mx.ome.tif", channel_levels("uint8"), colours=False)
    assert [kw["colormap"] for _, kw, _ in read_slide(str(path))] == list(CHANNEL_COLORMAPS[:4])


def test_brightfield_ome_tiff_is_still_one_rgb_layer(os2_pair) -> None:
    layers = read_slide(str(os2_pair[0]))
    assert len(layers) == 1
    data, kw, kind = layers[0]
    assert kind == "image" and kw["rgb"] and "blending" not in kw and data[0].shape[2] == 3


@pytest.mark.napari
def test_multiplex_in_a_viewer(make_napari_viewer, tmp_path: Path) -> None:
    levels = channel_levels("uint8", seed=5)
    path = write_qptiff(tmp_path / "mx.qptiff", levels)
    viewer = make_napari_viewer()
    viewer.open(str(path), plugin="napari-pathdistill")
    assert [layer.name for layer in viewer.layers] == list(NAMES)
    for c, layer in enumerate(viewer.layers):
        assert layer.multiscale and not layer.rgb and layer.blending == "additive"
        np.testing.assert_allclose(layer.scale, (MPP, MPP))
        assert [str(u) for u in layer.units] == ["micrometer", "micrometer"]
        np.testing.assert_allclose(layer.colormap.colors[-1], [v / 255 for v in COLOURS[c]] + [1.0])
        np.testing.assert_array_equal(np.asarray(layer.data[-1]), levels[-1][c])


def test_a_large_single_level_12_bit_multiplex_gets_limits_from_a_sample_of_its_tiles(tmp_path: Path) -> None:
    """Its only level is too large to read whole for limits; the dtype's range (0-65535) showed 12-bit black."""
    rng = np.random.default_rng(5)
    level = rng.gamma(2.0, 300.0, (len(NAMES), 2100, 2100)).clip(0, 4095).astype(np.uint16)  # 12-bit signal
    path = write_ome_multiplex(tmp_path / "mx12.ome.tif", [level])
    for c, (_, kw, _) in enumerate(read_slide(str(path))):
        lo, hi = kw["contrast_limits"]
        want_lo, want_hi = np.percentile(level[c], [0.5, 99.9])
        assert lo == pytest.approx(want_lo, abs=15) and hi == pytest.approx(want_hi, rel=0.1)


@pytest.mark.parametrize("tile", [256, 1024, 2048])
def test_limits_of_a_large_level_come_from_its_tiles_whatever_their_size(tile: int) -> None:
    """Before, tiles over 512 px gave no sample, and a 12-bit channel got the dtype's range (shown black)."""
    import dask.array as da

    from napari_pathdistill._channel_layers import _contrast_limits

    rng = np.random.default_rng(tile)
    level = rng.gamma(2.0, 300.0, (4600, 4600)).clip(0, 4095).astype(np.uint16)
    lo, hi = _contrast_limits(da.from_array(level, chunks=(tile, tile)), level.dtype)
    want_lo, want_hi = np.percentile(level, [0.5, 99.9])
    assert lo == pytest.approx(want_lo, abs=15) and hi == pytest.approx(want_hi, rel=0.1)
