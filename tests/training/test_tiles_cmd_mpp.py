"""Tiles written by ``pathdistill tiles --mpp M`` are trained at ``data.mpp``: rescaled by their ``grid.json``.

Until 2026-12-07 a tile folder was taken to be at ``data.tile_dirs_mpp`` (null: already at ``data.mpp``), so tiles
cut at 1 um/px and trained with ``data.mpp=0.5`` (the default) went in at half the magnification the export
states (its ``mpp`` is ``data.mpp``), without a word, though the folder said at which um/px they were cut.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from napari_pathdistill.cli.main import main as pathdistill
from pathdistill_train.data.sources import TileFolderSource


def _field(source: TileFolderSource, i: int = 0) -> np.ndarray:
    return source[(i, torch.Generator().manual_seed(0))].permute(1, 2, 0).numpy()


@pytest.fixture(scope="module")
def at_1um(tmp_path_factory, cmu_svs) -> Path:
    """Two 112 px tiles of the real CMU slide at 1 um/px (``pathdistill tiles`` output)."""
    out = tmp_path_factory.mktemp("t") / "cmu"
    argv = ["tiles", str(cmu_svs), "--out", str(out), "--tile-px", "112", "--mpp", "1.0", "--save-tiles", "2"]
    assert pathdistill([*argv, "--max-size", "1024"]) == 0
    return out


@pytest.mark.parametrize("folder_mpp", [None, 0.25])  # the folder's own um/px wins, as a slide's MPP does
@pytest.mark.parametrize("sub", ["", "tiles"])
def test_tiles_are_rescaled_from_the_um_px_they_were_cut_at(at_1um, folder_mpp, sub):
    source = TileFolderSource(at_1um / sub, 224, folder_mpp, 0.5)
    with Image.open(at_1um / "tiles" / "tile_00000.png") as im:
        expect = np.asarray(im.convert("RGB").resize((224, 224), Image.Resampling.BICUBIC))
    np.testing.assert_array_equal(_field(source), expect)  # the whole 112 px tile, twice as large
    assert (
        source.describe()[0]["rescaled"] == "from 1 um/px (the grid.json of `pathdistill tiles`) to 0.5 um/px"
    )


def test_tiles_at_the_target_um_px_are_left_alone(at_1um):
    source = TileFolderSource(at_1um, 112, None, 1.0)
    with Image.open(at_1um / "tiles" / "tile_00001.png") as im:
        np.testing.assert_array_equal(_field(source, 1), np.asarray(im.convert("RGB")))
    assert "rescaled" not in source.describe()[0]


def test_tiles_of_a_slide_without_mpp_take_the_folder_um_px(tmp_path, tcga_svs):
    out = tmp_path / "tcga"  # no MPP in the file: level-0 px, grid.json "mpp": null
    argv = ["tiles", str(tcga_svs), "--out", str(out), "--tile-px", "64", "--save-tiles", "1"]
    assert pathdistill([*argv, "--max-size", "512"]) == 0
    with Image.open(out / "tiles" / "tile_00000.png") as im:
        tile = np.asarray(im.convert("RGB"))
    np.testing.assert_array_equal(_field(TileFolderSource(out, 64, None, 0.5)), tile)
    doubled = _field(TileFolderSource(out, 128, 1.0, 0.5))  # data.tile_dirs_mpp=1.0: twice as large
    expect = np.asarray(Image.fromarray(tile).resize((128, 128), Image.Resampling.BICUBIC))
    np.testing.assert_array_equal(doubled, expect)
