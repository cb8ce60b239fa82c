"""Tile folders of 16-bit, palette, grey + alpha, CMYK and 32-bit images, written from a real H&E tile.

Until 2026-12-07 a 16-bit grey PNG / TIFF (Pillow mode ``I;16``) went through ``Image.convert("RGB")``, which
clips at 255: the tile trained as a white square, silently.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image

from _wsi_files import write_png16
from napari_pathdistill.errors import CorruptTileWarning
from pathdistill_train.data.sources import TileFolderSource
from pathdistill_train.errors import TrainDataError

PX = 64


@pytest.fixture(scope="module")
def he(shared_data: Path) -> np.ndarray:
    """A real 64 x 64 H&E crop (uint8 RGB)."""
    with Image.open(shared_data / "stain_norm" / "torchstain" / "source.png") as im:
        return np.asarray(im.convert("RGB"))[100 : 100 + PX, 100 : 100 + PX].copy()


def _only_tile(folder: Path) -> np.ndarray:
    """The (PX, PX, 3) field the training source reads from a folder of one PX x PX image."""
    source = TileFolderSource(folder, PX, None, 0.5)
    return source[(0, torch.Generator().manual_seed(0))].permute(1, 2, 0).numpy()


def _grey(rgb: np.ndarray) -> np.ndarray:
    return np.asarray(Image.fromarray(rgb).convert("L"))


@pytest.mark.parametrize("kind", ["png", "tiff_le", "tiff_be"])
def test_16_bit_grey_is_scaled_by_its_range_not_clipped_white(tmp_path, he, kind):
    grey16 = _grey(he).astype(np.uint16) * 257 + 100  # a full-range 16-bit image, not 8-bit values widened
    if kind == "png":
        Image.fromarray(grey16).save(tmp_path / "t.png")
        assert Image.open(tmp_path / "t.png").mode == "I;16"
    else:
        tifffile.imwrite(tmp_path / "t.tif", grey16, byteorder="<" if kind == "tiff_le" else ">")
    got = _only_tile(tmp_path)
    expect = np.rint(grey16 * (255 / 65535)).astype(np.uint8)
    assert got.mean() < 250  # was 255 everywhere
    np.testing.assert_array_equal(got, np.repeat(expect[..., None], 3, axis=2))


@pytest.mark.parametrize("kind", ["rgb16_png", "rgba16_png", "rgb16_tiff", "palette", "grey_alpha", "cmyk"])
def test_other_modes_read_as_the_rgb_they_show(tmp_path, he, kind):
    wide = he.astype(np.uint16) * 257
    expect = he
    if kind == "rgb16_png":
        write_png16(tmp_path / "t.png", wide)
    elif kind == "rgba16_png":
        alpha = np.full((PX, PX, 1), 65535, np.uint16)
        alpha[:, : PX // 2] = 0  # transparent left half: white
        write_png16(tmp_path / "t.png", np.concatenate([wide, alpha], axis=2))
        expect = he.copy()
        expect[:, : PX // 2] = 255
    elif kind == "rgb16_tiff":
        tifffile.imwrite(tmp_path / "t.tif", wide, photometric="rgb")
    elif kind == "palette":
        Image.fromarray(he).convert("P").save(tmp_path / "t.png")
        expect = np.asarray(Image.open(tmp_path / "t.png").convert("RGB"))
    elif kind == "grey_alpha":
        Image.fromarray(he).convert("LA").save(tmp_path / "t.png")
        expect = np.repeat(_grey(he)[..., None], 3, axis=2)
    else:
        Image.fromarray(he).convert("CMYK").save(tmp_path / "t.tif")
    np.testing.assert_array_equal(_only_tile(tmp_path), expect)


@pytest.mark.parametrize("mode", ["I", "F"])
def test_32_bit_images_are_skipped_naming_the_file(tmp_path, he, mode):
    values = _grey(he).astype(np.int32 if mode == "I" else np.float32) * 300
    Image.fromarray(values, mode=mode).save(tmp_path / "a_wide.tif")
    Image.fromarray(he).save(tmp_path / "b_good.png")
    source = TileFolderSource(tmp_path, PX, None, 0.5)
    with pytest.warns(CorruptTileWarning, match=r"a_wide\.tif .*no fixed range.*convert it to 8-bit RGB"):
        tile = source[(0, torch.Generator().manual_seed(0))]
    np.testing.assert_array_equal(tile.permute(1, 2, 0).numpy(), he)  # the next tile instead
    (tmp_path / "b_good.png").unlink()
    with pytest.warns(CorruptTileWarning), pytest.raises(TrainDataError, match="none of the 1 images"):
        TileFolderSource(tmp_path, PX, None, 0.5)[(0, torch.Generator())]
