"""A tile image file reads as the same RGB pixels in napari / ``pathdistill embed`` (the plain-image backend),
in the trainer's tile folders and in the linear probe's labelled tiles (``wsi.pil_rgb``).

Until 2026-12-07 these were three conversions: the probe's ``load_tile`` turned a 16-bit grey tile white
(Pillow's ``convert`` clips at 255), and the trainer read a 12-bit camera's tile (white 4095 in 16 bits) at
1/16 of the brightness the viewer showed; the plain-image backend then kept its own conversion, which showed a
palette PNG's transparent entries in their palette colour where the trainer and the probe saw white glass.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from napari_builtins.io import imread as napari_imread
from PIL import Image

from _wsi_files import write_png16
from napari_pathdistill.evaluation.labelled_tiles import load_tile
from napari_pathdistill.wsi.pil_rgb import pil_rgb
from napari_pathdistill.wsi.pyramid import open_pyramid
from pathdistill_train.data.sources import TileFolderSource

PX = 64


@pytest.fixture(scope="module")
def grey8(histolab_tiles: Path) -> np.ndarray:
    """A real H&E tile's (PX, PX) grey crop, uint8."""
    with Image.open(histolab_tiles / "high-nuclei-score-level0.png") as im:
        return np.asarray(im.convert("L"))[:PX, :PX].copy()


@pytest.fixture(scope="module")
def he(histolab_tiles: Path) -> np.ndarray:
    """A real H&E tile's (PX, PX) RGB crop, uint8."""
    with Image.open(histolab_tiles / "high-nuclei-score-level0.png") as im:
        return np.asarray(im.convert("RGB"))[:PX, :PX].copy()


def _three_readers(path: Path) -> list[np.ndarray]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # no MPP
        with open_pyramid(path) as pyr:
            viewer = pyr.read_region((0, 0), 0, (PX, PX))
    trainer = TileFolderSource(path.parent, PX, None, 0.5)[(0, torch.Generator().manual_seed(0))]
    return [viewer, trainer.permute(1, 2, 0).numpy(), load_tile(path, PX)]


@pytest.mark.parametrize("bits", [12, 16])
def test_a_16_bit_grey_tile_is_the_same_pixels_for_viewer_trainer_and_probe(tmp_path, grey8, bits) -> None:
    path = tmp_path / "tile.png"
    Image.fromarray(np.rint(grey8 * ((2**bits - 1) / 255)).astype(np.uint16)).save(path)
    want = np.repeat(grey8[..., None], 3, axis=2).astype(int)
    for name, got in zip(("viewer", "trainer", "probe"), _three_readers(path), strict=True):
        assert np.abs(got.astype(int) - want).max() <= 1, name  # probe: white; trainer: 16x darker at 12 bits


def test_alpha_is_composited_on_white_and_32_bit_images_are_refused(grey8) -> None:
    rgba = np.dstack([np.repeat(grey8[..., None], 3, axis=2), np.full((PX, PX), 255, np.uint8)])
    rgba[:, : PX // 2, 3] = 0
    got = pil_rgb(Image.fromarray(rgba))
    assert (got[:, : PX // 2] == 255).all() and (got[:, PX // 2 :, 0] == grey8[:, PX // 2 :]).all()
    with pytest.raises(ValueError, match="no fixed range"):
        pil_rgb(Image.fromarray(grey8.astype(np.float32), mode="F"))


def _write_mode(path: Path, he: np.ndarray, kind: str) -> np.ndarray:
    """Write ``he`` as a ``kind`` image at ``path``; the RGB a pathologist expects it to read as (transparent:
    white glass)."""
    left = np.s_[:, : PX // 2]  # the transparent half, where a kind has one
    grey = np.asarray(Image.fromarray(he).convert("L"))
    want = he.copy()
    if kind in ("palette_transparent_index", "palette_alpha_table"):
        pal = Image.fromarray(he).quantize(63)  # entries 0..62 hold the tile, 63 is free for the glass
        idx = np.asarray(pal).copy()
        idx[left] = 63
        out = Image.fromarray(idx, "P")
        out.putpalette([*pal.getpalette()[: 63 * 3], 20, 20, 20])  # the glass entry's colour: near black
        if kind == "palette_transparent_index":
            out.save(path, transparency=63)
        else:  # a tRNS alpha table: the glass entry transparent, the others opaque
            out.save(path, transparency=bytes([255] * 63 + [0]))
        want = np.asarray(pal.convert("RGB")).copy()
        want[left] = 255
    elif kind == "grey_colour_key":  # PNG tRNS: grey level 0 is transparent
        img = np.maximum(grey, 1)  # the tile's own pixels never take the key's value
        img[left] = 0
        Image.fromarray(img).save(path, transparency=0)
        want = np.repeat(img[..., None], 3, axis=2)
        want[left] = 255
    elif kind == "rgb_colour_key":  # PNG tRNS: the colour (1, 2, 3) is transparent
        img = he.copy()
        img[np.all(img == (1, 2, 3), axis=2)] = (4, 4, 4)
        img[left] = (1, 2, 3)
        Image.fromarray(img).save(path, transparency=(1, 2, 3))
        want = img.copy()
        want[left] = 255
    elif kind == "grey_alpha":
        alpha = np.full((PX, PX), 255, np.uint8)
        alpha[left] = 0
        Image.fromarray(np.dstack([grey, alpha]), "LA").save(path)
        want = np.repeat(grey[..., None], 3, axis=2)
        want[left] = 255
    elif kind == "rgba":
        alpha = np.full((PX, PX), 255, np.uint8)
        alpha[left] = 0
        Image.fromarray(np.dstack([he, alpha])).save(path)
        want[left] = 255
    elif kind == "cmyk_jpeg":
        Image.fromarray(he).convert("CMYK").save(path, quality=95)
        with Image.open(path) as im:
            want = np.asarray(im.convert("RGB"))
    elif kind == "rgb16_png":
        write_png16(path, he.astype(np.uint16) * 257)
    elif kind == "grey16_png":
        Image.fromarray(grey.astype(np.uint16) * 257).save(path)
        want = np.repeat(grey[..., None], 3, axis=2)
    elif kind == "one_bit":
        Image.fromarray(grey > 128).save(path)
        want = np.repeat(np.where(grey > 128, 255, 0).astype(np.uint8)[..., None], 3, axis=2)
    return want


MODES = ["palette_transparent_index", "palette_alpha_table", "grey_colour_key", "rgb_colour_key", "grey_alpha",
         "rgba", "cmyk_jpeg", "rgb16_png", "grey16_png", "one_bit"]  # fmt: skip


@pytest.mark.parametrize("kind", MODES)
def test_every_image_mode_is_the_same_pixels_for_viewer_trainer_and_probe(tmp_path, he, kind) -> None:
    """The old plain-image backend showed a palette PNG's transparent entries in their palette colour (here near
    black) where the trainer and the probe saw white: a tile's glass read as dark tissue in napari and
    ``pathdistill tiles`` only."""
    path = tmp_path / ("tile.jpg" if kind.endswith("jpeg") else "tile.png")
    want = _write_mode(path, he, kind)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Pillow: "Palette images with Transparency expressed in bytes ..."
        got = _three_readers(path)
    for name, arr in zip(("viewer", "trainer", "probe"), got, strict=True):
        np.testing.assert_array_equal(arr, want, err_msg=name)


def test_an_exif_rotated_jpeg_is_used_as_stored_as_napari_shows_it(tmp_path, he) -> None:
    """A phone photo of a tile carries an EXIF Orientation tag. napari's own reader (imageio, no ``rotate``)
    shows the pixels as stored, and the widgets place their results on that layer in its pixels, so the core,
    the trainer and the probe use the stored pixels too: a rotation applied in one of them only would put every
    overlay on a transposed frame."""
    tall = np.concatenate([he, he[::-1]], axis=0)  # (2 PX, PX): a rotation changes the shape
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 CW to display
    path = tmp_path / "phone.jpg"
    Image.fromarray(tall).save(path, exif=exif, quality=95)
    layer = napari_imread(str(path))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # no MPP
        with open_pyramid(path) as pyr:
            assert pyr.levels[0].shape == layer.shape[:2] == (2 * PX, PX)
            viewer = pyr.read_region((0, 0), 0, (PX, 2 * PX))
    np.testing.assert_array_equal(viewer, layer)
    with Image.open(path) as im:
        np.testing.assert_array_equal(pil_rgb(im), layer)
    np.testing.assert_array_equal(load_tile(path, PX), layer[PX // 2 : PX // 2 + PX])  # centre crop


def test_an_rgb_image_is_copied_in_strips_not_through_one_tobytes(monkeypatch) -> None:
    """``np.asarray(img.convert("RGB"))`` held a converted copy of the decoded image and ``tobytes``' chunks beside
    their joined copy (traced peak 2x the RGB bytes, RSS 4.6x for an 8,000 x 8,000 JPEG): a large plain image
    opened in napari peaked at several GB. The strips keep the traced peak near the result's own bytes."""
    import tracemalloc

    import napari_pathdistill.wsi.pil_rgb as module

    rgb = np.random.default_rng(0).integers(0, 256, (1500, 1000, 3), dtype=np.uint8)
    img = Image.fromarray(rgb)
    monkeypatch.setattr(module, "STRIP_BYTES", 100 * 3 * 1000)  # 100 rows a strip
    tracemalloc.start()
    try:
        out = pil_rgb(img)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    np.testing.assert_array_equal(out, rgb)
    assert out.flags.writeable and peak < 1.3 * rgb.nbytes, peak / rgb.nbytes
