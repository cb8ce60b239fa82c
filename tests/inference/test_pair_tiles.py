"""Slide B's tiles cut through the registration, on a real H&E field turned and rescanned at another um/px."""

from __future__ import annotations

import numpy as np
import pytest

from _wsi_files import write_turned_pair
from napari_pathdistill.inference.pair_similarity import iter_pair_similarity
from napari_pathdistill.progress import drain
from napari_pathdistill.wsi.pyramid import open_pyramid


def _turned_pair(tmp_path, cmu_svs, degrees: float) -> tuple:
    """A: a real 600 um CMU field; B: the same tissue turned by ``degrees``, at 0.35 um/px.
    Returns (path A, path B, (3, 3) A level-0 px -> B level-0 px, landmarks (A px, B px))."""
    with open_pyramid(cmu_svs) as pyr:
        a = np.ascontiguousarray(pyr.read_region((600, 1100), 0, (1200, 1200))[..., :3])
    path_a, path_b, a_to_b = write_turned_pair(tmp_path, a, float(np.mean(pyr.mpp)), degrees, 0.35)
    lm_a = np.array([[100.0, 100.0], [1100, 150], [600, 1100], [200, 900]])
    return path_a, path_b, a_to_b, (lm_a, lm_a @ a_to_b[:2, :2].T + a_to_b[:2, 2])


def test_b_tiles_of_a_turned_section_show_a_s_tissue_in_a_s_orientation(tmp_path, cmu_svs, tiny_vit_2um):
    """B turned by 30 degrees: each B tile was the axis-aligned square around the mapped centre, i.e. A's tissue
    turned by 30 degrees with other tissue in its corners (mean cosine 0.92 on a 25-degree CMU pair with the
    shipped student, 0.98 unturned; top-1 accuracy 0.2 with the tiny ViT here). Resampled through the
    registration, B's tile is A's tile: pixels and embeddings agree."""
    from napari_pathdistill.inference.pair_tiles import match_tiles
    from napari_pathdistill.wsi.tiling import make_tile_grid, read_tiles

    path_a, path_b, a_to_b, landmarks = _turned_pair(tmp_path, cmu_svs, 30.0)
    res = drain(iter_pair_similarity(tiny_vit_2um, path_a, path_b, landmarks=landmarks, min_tissue=0.3, top_k=1,
                                     view_size=None))  # fmt: skip
    np.testing.assert_allclose(res.transform.matrix, a_to_b, atol=1e-6)
    assert res.b_resampled and len(res.cosine) >= 12
    assert res.topk_accuracy > 0.9  # each B tile is its A tile's nearest neighbour (the squares: 0.2)
    # the tiles at 224 px at 0.5 um/px: B's tile i is A's tile i, pixel for pixel (up to resampling)
    with open_pyramid(path_a) as pa, open_pyramid(path_b) as pb:
        grid_a = make_tile_grid(pa, tile_px=224, mpp=0.5, min_tissue=0.5)
        grid_b = make_tile_grid(pb, tile_px=224, mpp=0.5, min_tissue=0.0)
        grid_a, grid_b, _, read_b = match_tiles(pa, grid_a, pb, grid_b, a_to_b, 0.03)
        assert read_b is not None
        ta = read_tiles(pa, grid_a, range(len(grid_a))).astype(np.float64)
        tb = read_b(pb, grid_b, range(len(grid_b))).astype(np.float64)
        square = read_tiles(pb, grid_b, range(len(grid_b))).astype(np.float64)  # the old cut
    assert len(ta) >= 4
    assert np.abs(tb - ta).mean() < 6, np.abs(
        tb - ta
    ).mean()  # grey levels of 255 (3.3: B was resampled twice)
    assert np.abs(square - ta).mean() > 25, np.abs(square - ta).mean()


@pytest.mark.parametrize(("degrees", "resampled"), [(0.0, False), (0.3, False), (5.0, True), (180.0, True)])
def test_only_a_turn_or_stretch_the_tile_shows_is_resampled(degrees, resampled):
    """At 112 px a 0.3-degree turn moves a tile corner by 0.4 px: cut as a square, as A's tiles are."""
    from napari_pathdistill.inference.pair_tiles import MAX_CORNER_PX, corner_error_px

    t = np.deg2rad(degrees)
    linear = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]]) * 1.5  # and 1.5x finer B px
    assert (corner_error_px(linear, 200.0, 300.0, 112) > MAX_CORNER_PX) is resampled
    assert corner_error_px(np.eye(2) * 1.1, 200.0, 200.0, 112) == pytest.approx(5.6)  # 10 % stretch
