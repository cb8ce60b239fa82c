"""Tiles smaller than the source field (the common case: 224-px tiles, 224-px views, ``data.source_scale`` 1.25).

The field a tile folder gives the view maker is ``round(crops.global_size * data.source_scale)`` px (280 for
224-px views). Until 2026-12-07 a smaller tile was pasted in the field's top-left corner on white: a folder of
224 x 224 tiles (the paper's data: 224-px tiles at 20x) trained on fields 36 % white, a white band along two
edges of most global views. Now the tile's largest square is enlarged to the field, so the views are the
tile's pixels (a full-area crop gives back the tile at its own resolution).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pathdistill_train.config import load_config
from pathdistill_train.data.loaders import build_source
from pathdistill_train.data.sources import TileFolderSource
from pathdistill_train.data.tile_store import store_identity

FIELD = 280  # round(224 * 1.25): the default field of 224-px views


@pytest.fixture(scope="module")
def tissue(histolab_tiles: Path) -> np.ndarray:
    """A real H&E tile with no white border (uint8 RGB, 779 x 956)."""
    with Image.open(histolab_tiles / "high-nuclei-score-level0.png") as im:
        return np.asarray(im.convert("RGB"))


def _field(folder: Path, seed: int = 0) -> np.ndarray:
    source = TileFolderSource(folder, FIELD, None, 0.5)
    return source[(0, torch.Generator().manual_seed(seed))].permute(1, 2, 0).numpy()


def _enlarged(rgb: np.ndarray) -> np.ndarray:
    return np.asarray(Image.fromarray(rgb).resize((FIELD, FIELD), Image.Resampling.BICUBIC))


def test_a_224_px_tile_fills_the_280_px_field_with_its_own_pixels(tmp_path, tissue):
    tile = tissue[:224, :224]
    assert (tile == 255).all(-1).mean() < 0.01  # tissue, no white margin of its own
    Image.fromarray(tile).save(tmp_path / "t.png")
    field = _field(tmp_path)
    assert field.shape == (FIELD, FIELD, 3)
    assert (field == 255).all(-1).mean() < 0.01  # was 0.36: white right and bottom bands
    np.testing.assert_array_equal(field, _enlarged(tile))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # 1.25x: no warning, and a writable array for torch
        _field(tmp_path)


def test_a_tile_enlarged_more_than_twice_is_said_once(tmp_path, histolab_tiles):
    # the 50 x 50 px liver tiles of the histolab fixtures, 5.6x in the field
    for name in ("liver-level2-10907-7808-11707-8608.png", "liver-level2-20914-13715-21714-14515.png"):
        (tmp_path / name).symlink_to(histolab_tiles / name)
    source = TileFolderSource(tmp_path, FIELD, None, 0.5)
    with pytest.warns(UserWarning, match=r"50 x 50 px at 0.5 um/px, enlarged 5.6x") as record:
        fields = [source[(i, torch.Generator().manual_seed(0))] for i in (0, 1, 0)]
    assert len([w for w in record if "enlarged" in str(w.message)]) == 1
    assert all(f.shape == (3, FIELD, FIELD) and f.numpy().flags.writeable for f in fields)


def test_a_tile_narrower_than_the_field_gives_a_random_square_of_its_own(tmp_path, tissue):
    tile = tissue[:200, :400]  # shorter than the field one way, longer the other
    Image.fromarray(tile).save(tmp_path / "t.png")
    fields = [_field(tmp_path, seed) for seed in range(6)]
    squares = [_enlarged(tile[:, x : x + 200]) for x in range(201)]
    for field in fields:
        assert any(np.array_equal(field, sq) for sq in squares)
    assert len({f.tobytes() for f in fields}) > 1  # the square's position is drawn


def test_tiles_the_size_of_the_field_or_larger_are_cropped_as_before(tmp_path, tissue):
    tile = tissue[:300, :320]
    Image.fromarray(tile).save(tmp_path / "t.png")
    field = _field(tmp_path)
    crops = [tile[y : y + FIELD, x : x + FIELD] for y in range(21) for x in range(41)]
    assert any(np.array_equal(c, field) for c in crops)  # a crop at native resolution, no resampling


def test_a_tile_store_written_with_padded_fields_is_not_reused(histolab_tiles):
    cfg = load_config("smoke_cpu", [f"data.tile_dirs=[{histolab_tiles}]"])
    identity = store_identity(cfg.data, 70, 0)
    assert identity["small_tiles"] == "enlarged"  # absent from the identity of a store with padded fields
    assert len(build_source(cfg.data, 70)) == identity["tile_dirs"][0]["tiles"]
