"""Multiplex immunofluorescence TIFFs (OME-TIFF, QPTIFF, a QPTIFF renamed .tif): channels read natively per
level and tile, names/colours/um from the file; every RGB read (tiles, thumbnail, embed, tiles CLI) refused."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import tifffile

from _multiplex_files import COLOURS, MPP, NAMES, TILE, channel_levels, write_ome_multiplex, write_qptiff
from napari_pathdistill.cli.main import main
from napari_pathdistill.errors import WSIError
from napari_pathdistill.wsi import TileGrid, detect_tissue, open_pyramid, read_tiles

REFUSED = "is a multiplex immunofluorescence image (4 channels: DAPI, CD3, CD8, PanCK), not a brightfield "
REFUSED += "slide"
MODELS = "because the models and tissue detection expect brightfield RGB (H&E, IHC)"


@pytest.fixture(params=["uint8", "uint16"])
def levels(request) -> list[np.ndarray]:
    return channel_levels(request.param)


@pytest.fixture(params=["ome", "qptiff", "renamed"])
def multiplex(request, levels, tmp_path) -> Path:
    """A 4-channel pyramid in one of the three layouts (the QPTIFF renamed .tif keeps its layout)."""
    if request.param == "ome":
        return write_ome_multiplex(tmp_path / "mx.ome.tif", levels)
    qp = write_qptiff(tmp_path / "mx.qptiff", levels)
    return qp if request.param == "qptiff" else Path(shutil.copy(qp, tmp_path / "renamed.tif"))


def test_channels_levels_and_pixels_as_written(multiplex: Path, levels: list[np.ndarray]) -> None:
    with open_pyramid(multiplex) as pyr:
        assert pyr.backend == "tifffile"
        assert [ch.name for ch in pyr.channels] == list(NAMES)
        assert [ch.color for ch in pyr.channels] == list(COLOURS)
        assert all(ch.dtype == levels[0].dtype for ch in pyr.channels)
        assert pyr.mpp == pytest.approx((MPP, MPP))
        assert [lv.shape for lv in pyr.levels] == [a.shape[1:] for a in levels]
        arrays = pyr.channel_dask()
        assert len(arrays) == len(levels)
        for arr, want in zip(arrays, levels, strict=True):
            assert arr.shape == want.shape and arr.dtype == want.dtype
            assert arr.chunks[0] == (1,) * 4 and set(arr.chunks[1][:-1]) <= {TILE}  # one chunk per tile
            np.testing.assert_array_equal(arr.compute(), want)


def test_qptiff_is_what_tifffile_calls_qpi(tmp_path: Path) -> None:
    """The written QPTIFF is read by tifffile's own QPI series parser (thumbnail, macro, label kept apart)."""
    levels = channel_levels("uint16")
    path = write_qptiff(tmp_path / "mx.qptiff", levels)
    with tifffile.TiffFile(path) as tif:
        assert tif.is_qpi
        assert [(s.kind, s.name) for s in tif.series] == [
            ("qpi", "Baseline"), ("qpi", "Thumbnail"), ("qpi", "Macro"), ("qpi", "Label")
        ]  # fmt: skip
        assert [lv.shape for lv in tif.series[0].levels] == [a.shape for a in levels]


def test_qptiff_biomarker_named_before_its_fluorophore(tmp_path: Path) -> None:
    path = write_qptiff(tmp_path / "mx.qptiff", channel_levels("uint8"), ("DNA", "CD3", "CD8", "PanCK"))
    with open_pyramid(path) as pyr:
        assert [ch.name for ch in pyr.channels] == ["DNA (DAPI)", "CD3", "CD8", "PanCK"]


def test_read_channel_window_across_tiles_and_outside(tmp_path: Path) -> None:
    levels = channel_levels("uint16")
    with open_pyramid(write_ome_multiplex(tmp_path / "mx.ome.tif", levels)) as pyr:
        backend = pyr._backend
        block = backend.read_channel_level(0, 2, 200, 250, 300, 400)  # spans 2x3 tiles
        np.testing.assert_array_equal(block, levels[0][2, 250:650, 200:500])
        edge = backend.read_channel_level(1, 3, 400, 500, 100, 100)  # level 1 is 450 x 550
        np.testing.assert_array_equal(edge[:50, :50], levels[1][3, 500:, 400:])
        assert not edge[50:].any() and not edge[:, 50:].any()  # outside the image: dark
        window = pyr.channel_dask()[0][1, 300:310, 250:260].compute()  # inside one chunk, any window
        np.testing.assert_array_equal(window, levels[0][1, 300:310, 250:260])


def test_ome_without_colours_has_none(tmp_path: Path) -> None:
    path = write_ome_multiplex(tmp_path / "mx.ome.tif", channel_levels("uint8"), colours=False)
    with open_pyramid(path) as pyr:
        assert [ch.color for ch in pyr.channels] == [None] * 4
        assert [ch.name for ch in pyr.channels] == list(NAMES)


def test_single_level_multiplex_is_not_opened_by_openslide(tmp_path: Path) -> None:
    """A one-level tiled CYX TIFF is OpenSlide's "generic-tiff", which would show channel 0 as grey RGB."""
    levels = channel_levels("uint8", n_levels=1)
    with open_pyramid(write_ome_multiplex(tmp_path / "flat.ome.tif", levels)) as pyr:
        assert pyr.backend == "tifffile" and len(pyr.channels) == 4
        np.testing.assert_array_equal(pyr.channel_dask()[0].compute(), levels[0])


def test_multiplex_z_stack_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "z.ome.tif"
    data = np.zeros((2, 4, 64, 64), np.uint16)
    tifffile.imwrite(path, data, ome=True, metadata={"axes": "ZCYX"}, tile=(32, 32))
    with pytest.raises(WSIError, match=r"z.ome.tif: a multi-channel image with Z=2 besides its 4 channels"):
        open_pyramid(path)


def test_every_rgb_read_is_refused(multiplex: Path) -> None:
    grid = TileGrid(np.zeros((1, 2), np.int64), 64, None, 64.0, 0, np.ones(1), (1, 1))
    with open_pyramid(multiplex) as pyr:
        for read, purpose in [
            (lambda: pyr.read_region((0, 0), 0, (64, 64)), "reading RGB tiles"),
            (lambda: read_tiles(pyr, grid, [0]), "reading RGB tiles"),
            (pyr.thumbnail, "tissue detection"),
            (lambda: detect_tissue(pyr), "tissue detection"),
            (pyr.to_dask, "an RGB view"),
        ]:
            with pytest.raises(WSIError) as info:
                read()
            assert f"{multiplex.name} {REFUSED}: {purpose}" in str(info.value) and MODELS in str(info.value)


def test_brightfield_ome_tiff_has_no_channels(os2_pair) -> None:
    with open_pyramid(os2_pair[0]) as pyr:
        assert pyr.channels is None
        pyr.require_brightfield("embedding")  # no refusal
        tile = pyr.read_region((1000, 1000), 0, (64, 64))
        assert tile.shape == (64, 64, 3) and tile.dtype == np.uint8
        assert pyr.to_dask()[0].shape[2] == 3
        with pytest.raises(WSIError, match="brightfield slide without separate channels"):
            pyr.channel_dask()


def test_tiles_cli_refuses_multiplex(multiplex: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "tiles"
    assert main(["tiles", str(multiplex), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert f"error: {multiplex.name} {REFUSED}: tiling is refused {MODELS}" in err
    assert not out.exists()


def test_embed_cli_refuses_multiplex(tmp_path: Path, capsys) -> None:
    from napari_pathdistill.models.checkpoint import save_checkpoint
    from napari_pathdistill.models.testing import tiny_model

    model = tiny_model("vit")
    ckpt = save_checkpoint(model.module, model.spec, tmp_path / "ckpt")
    slide = write_ome_multiplex(tmp_path / "mx.ome.tif", channel_levels("uint16"))
    out = tmp_path / "emb"
    assert main(["embed", str(slide), "--model", str(ckpt), "--out", str(out), "--device", "cpu"]) == 1
    err = capsys.readouterr().err
    assert f"FAILED {slide}: {slide.name} {REFUSED}: embedding is refused {MODELS}" in err
    assert not list(out.glob("mx*"))  # no .h5, no .partial, no lock


def test_float32_component_data_reads_natively(tmp_path: Path) -> None:
    """inForm's unmixed component TIFFs are float32 QPTIFF: one channel per page, values kept as written."""
    levels = [a.astype(np.float32) / 7.0 for a in channel_levels("uint16", n_levels=2)]
    with open_pyramid(write_qptiff(tmp_path / "component_data.tif", levels)) as pyr:
        assert [ch.dtype for ch in pyr.channels] == [np.dtype(np.float32)] * 4
        for arr, want in zip(pyr.channel_dask(), levels, strict=True):
            np.testing.assert_array_equal(arr.compute(), want)


def test_brightfield_qptiff_stays_rgb(tmp_path: Path) -> None:
    """A brightfield (Vectra RGB) QPTIFF has one RGB page per level: not multiplex, read as RGB as before."""
    rgb = np.random.default_rng(1).integers(0, 256, (600, 500, 3), dtype=np.uint8)
    path = tmp_path / "bf.qptiff"
    desc = "<PerkinElmer-QPI-ImageDescription><ImageType>{}</ImageType></PerkinElmer-QPI-ImageDescription>"
    kw = {"software": "PerkinElmer-QPI", "metadata": None, "photometric": "rgb"}
    with tifffile.TiffWriter(path) as tw:
        tw.write(rgb, tile=(TILE, TILE), description=desc.format("FullResolution"), **kw)
        tw.write(rgb[::8, ::8], description=desc.format("Thumbnail"), **kw)
        tw.write(rgb[::2, ::2], tile=(TILE, TILE), description=desc.format("ReducedResolution"), **kw)
    with tifffile.TiffFile(path) as tif:
        assert tif.is_qpi and tif.series[0].kind == "qpi"
    with open_pyramid(path) as pyr:
        assert pyr.channels is None and len(pyr.levels) == 2
        np.testing.assert_array_equal(pyr.read_region((100, 50), 0, (300, 200)), rgb[50:250, 100:400])
