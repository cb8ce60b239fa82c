"""A dense patch-token map of a real slide with two undecodable JPEG tiles (a copy of CMU-1-Small-Region.svs with
their headers zeroed): the tiles over them are left out (transparent cells) with one warning, the map of the
rest is made, as the Embed widget's tile-level map does, instead of the whole run failing at the first one."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from _wsi_files import corrupt_svs_copy
from napari_pathdistill.errors import CorruptTileWarning
from napari_pathdistill.inference.dense_maps import iter_dense_map
from napari_pathdistill.models.testing import tiny_model
from napari_pathdistill.progress import drain
from napari_pathdistill.wsi.pyramid import open_pyramid
from napari_pathdistill.wsi.tiling import read_tiles

#: native 240 px JPEG tiles (10 across) of CMU-1-Small-Region in tissue: row 3 col 4, row 4 col 5
BAD = (34, 45)


@pytest.fixture(scope="module")
def corrupt_cmu(tmp_path_factory, cmu_svs: Path) -> Path:
    return corrupt_svs_copy(cmu_svs, tmp_path_factory.mktemp("dense_corrupt") / "cmu-bad.svs", BAD)


def _unreadable(x: int, y: int, size: float) -> bool:
    """Whether the level-0 square (x, y, size) touches a corrupt native tile."""
    return any(x < (i % 10 + 1) * 240 and x + size > (i % 10) * 240 and y < (i // 10 + 1) * 240
               and y + size > (i // 10) * 240 for i in BAD)  # fmt: skip


@pytest.mark.parametrize("stride", [None, 112])
def test_undecodable_tiles_are_left_out_of_the_map_with_one_warning(corrupt_cmu, cmu_svs, stride):
    vit = tiny_model("vit", tile_px=224)
    with warnings.catch_warnings(record=True) as got:
        warnings.simplefilter("always")
        # unreadable tiles: 3 of 16, all in the projected rest; at half stride 14 of 72, 3 in the PCA sample
        res = drain(iter_dense_map(vit, corrupt_cmu, mpp=1.0, min_tissue=0.1, stride_px=stride,
                                   n_fit_tokens=4 * 256 if stride is None else 16 * 256))  # fmt: skip
    size = res.grid.size_level0
    bad = np.array([_unreadable(x, y, size) for x, y in res.grid.coords])
    assert 0 < bad.sum() < len(bad)
    skipped = [str(w.message) for w in got if issubclass(w.category, CorruptTileWarning)
               and "patch-token map" in str(w.message)]  # fmt: skip
    assert skipped == [f"cmu-bad.svs: skipped {bad.sum()} unreadable tiles (they cannot be decoded: the slide "
                       "file is corrupt there); the patch-token map is transparent where no other tile covers "
                       "them"]  # fmt: skip
    assert np.isfinite(res.scores).all() and np.isfinite(res.pca_mean).all()
    g = res.patch_grid[0]
    counts = np.zeros(res.valid.shape, int)
    for r, c in res.offsets[~bad]:
        counts[r : r + g, c : c + g] += 1
    np.testing.assert_array_equal(res.counts, counts)  # the unreadable tiles count nowhere
    assert (~res.valid).any() and np.array_equal(res.valid, counts > 0)
    if stride is None:  # each readable tile's cells: its own tokens on the map's PCA
        good = np.flatnonzero(~bad)[:6]
        with open_pyramid(cmu_svs) as pyr:  # the intact slide: the same pixels where the copy is readable
            tiles = read_tiles(pyr, res.grid, good)
        with torch.no_grad():
            tokens = vit.module.forward_features(vit.preprocess(tiles))[:, 5:].reshape(len(good), g, g, -1)
        for i, proj in zip(good, res.project(tokens.numpy()), strict=True):
            r, c = res.offsets[i]
            np.testing.assert_allclose(res.scores[r : r + g, c : c + g], proj, atol=2e-4)


def test_hover_lookup_never_names_an_undecodable_tile(corrupt_cmu):
    """At half stride a cell an undecodable tile would cover is shown from its readable neighbours only:
    ``patch_at`` names one of those (the nearest readable), not the tile that is not on the map."""
    vit = tiny_model("vit", tile_px=224)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CorruptTileWarning)
        res = drain(
            iter_dense_map(vit, corrupt_cmu, mpp=1.0, min_tissue=0.1, stride_px=112, n_fit_tokens=16 * 256)
        )
    size = res.grid.size_level0
    bad = np.flatnonzero([_unreadable(x, y, size) for x, y in res.grid.coords])
    np.testing.assert_array_equal(res.skipped, bad)
    named = {res.patch_at(r, c)[0] for r, c in zip(*np.nonzero(res.valid), strict=True)}
    assert named and not named & set(bad.tolist())
