"""A tile image file reads as the same RGB pixels in napari / ``pathdistill embed`` (the plain-image backend),
in the trainer's tile folders and in the linear probe's labelled tiles (``wsi.pil_rgb``).

Until 2026-12-07 these were three conversions: the probe's ``load_tile`` turned a 16-bit grey tile white
(Pillow's ``convert`` clips at 255), and the trainer read a 12-bit camera's tile (white 4095 in 16 bits) at
1/16 of the brightness the viewer showed.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

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
