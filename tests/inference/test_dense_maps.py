"""Dense patch-token maps on the real CMU-1-Small-Region slide with a tiny random ViT of the registry architecture
(vit_small_patch14_reg4_dinov2: CLS + 4 registers, 16 x 16 patch tokens per 224 px tile), checked against tokens
computed directly with timm's ``forward_features``."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from napari_pathdistill.errors import Cancelled, PathDistillError
from napari_pathdistill.inference.dense_maps import DenseMap, iter_dense_map
from napari_pathdistill.models.testing import tiny_model
from napari_pathdistill.progress import Progress, drain
from napari_pathdistill.wsi.pyramid import open_pyramid
from napari_pathdistill.wsi.tiling import detect_tissue, make_tile_grid, read_tiles

#: 224 px tiles at 1 um/px: 449 level-0 px on this 0.499 um/px slide, a 6 x 4 grid
MPP = 1.0


@pytest.fixture(scope="module")
def vit():
    return tiny_model("vit", tile_px=224)


def _direct_tokens(model, slide, grid) -> np.ndarray:
    """(N, 16, 16, D) patch tokens straight from timm: forward_features, the 1 + 4 prefix tokens dropped."""
    with open_pyramid(slide) as pyr:
        tiles = read_tiles(pyr, grid, range(len(grid)))
    assert model.module.num_prefix_tokens == 5
    with torch.no_grad():
        tokens = model.module.forward_features(model.preprocess(tiles))[:, 5:]
    return tokens.reshape(len(tiles), 16, 16, -1).numpy()


def test_cells_are_the_pca_of_each_tiles_tokens(vit, cmu_svs):
    # 2 of the 6 tiles fit the PCA, the other 4 are projected on the model's device: both paths are checked
    res = drain(iter_dense_map(vit, cmu_svs, mpp=MPP, min_tissue=0.1, max_tiles=6, n_fit_tokens=2 * 256))
    assert isinstance(res, DenseMap) and res.patch_grid == (16, 16) and res.stride_cells == 16
    with open_pyramid(cmu_svs) as pyr:  # the tile-level map's tiles (iter_slide_map), first 6
        grid = make_tile_grid(pyr, tile_px=224, mpp=MPP, min_tissue=0.1, mask=detect_tissue(pyr))
    np.testing.assert_array_equal(res.grid.coords, grid.coords[:6])
    rows, cols = grid.grid_shape
    assert res.rgb.shape == (rows * 16, cols * 16, 3) and res.rgb.dtype == np.uint8
    assert res.valid.sum() == 6 * 256 and res.counts.max() == 1
    expected = res.project(_direct_tokens(vit, cmu_svs, res.grid))  # (6, 16, 16, 3)
    for i, (x, y) in enumerate(res.grid.coords):
        r, c = round(y / grid.size_level0) * 16, round(x / grid.size_level0) * 16
        np.testing.assert_allclose(res.scores[r : r + 16, c : c + 16], expected[i], atol=2e-4)
    assert np.all(res.scores[~res.valid] == 0) and np.all(res.rgb[~res.valid] == 0)
    # robust colours: each score's 1st..99th percentile over the tissue cells spans 0..255
    lo, hi = np.percentile(res.scores[res.valid], [1, 99], axis=0)
    want = np.rint(np.clip((res.scores[res.valid] - lo) / (hi - lo), 0, 1) * 255)
    assert np.abs(res.rgb[res.valid].astype(int) - want).max() <= 1
    assert res.rgb[res.valid].std(0).min() > 30  # three informative channels, not a flat colour


def test_pca_fitted_on_all_tokens_is_their_pca(vit, cmu_svs):
    res = drain(iter_dense_map(vit, cmu_svs, mpp=MPP, min_tissue=0.1, max_tiles=4))  # 4 x 256 < n_fit_tokens
    tokens = _direct_tokens(vit, cmu_svs, res.grid).reshape(-1, vit.dim).astype(np.float64)
    _, _, vt = np.linalg.svd(tokens - tokens.mean(0), full_matrices=False)
    np.testing.assert_allclose(np.abs(np.sum(vt[:3] * res.pca_components, axis=1)), 1.0, atol=1e-3)
    np.testing.assert_allclose(res.pca_mean, tokens.mean(0), atol=1e-4)


def test_geometry_matches_the_tile_level_map(vit, cmu_svs):
    res = drain(iter_dense_map(vit, cmu_svs, mpp=MPP, min_tissue=0.1, max_tiles=2))
    size, mpp = res.grid.size_level0, res.grid.slide_mpp
    np.testing.assert_allclose(res.scale, (size / 16 * mpp,) * 2)
    # napari puts cell (r, c) at translate + (r, c) * scale: its first tile's first cell is centred on the
    # centre of that tile's first 1/16 x 1/16 patch, in um like the slide layer (level-0 px x um/px)
    x, y = res.grid.coords[0]
    first = np.asarray(res.translate) + res.offsets[0] * np.asarray(res.scale)
    np.testing.assert_allclose(first, (np.array([y, x]) + (size / 16 - 1) / 2) * mpp, atol=0.5 * mpp)


def test_um_px_override_of_a_slide_without_mpp_places_the_cells_in_level0_px(vit, tcga_svs):
    """The TCGA slide states no MPP: with a level-0 um/px of 0.25 its 224 px tiles at 1 um/px are 896 level-0 px,
    and the cells are placed in level-0 px (napari shows the slide in pixels), not in um."""
    res = drain(iter_dense_map(vit, tcga_svs, mpp=MPP, min_tissue=0.5, max_tiles=2, fallback_mpp=0.25))
    size = res.grid.size_level0
    assert size == pytest.approx(896)
    np.testing.assert_allclose(res.scale, (size / 16,) * 2)
    x, y = res.grid.coords[0]
    first = np.asarray(res.translate) + res.offsets[0] * np.asarray(res.scale)
    np.testing.assert_allclose(first, np.array([y, x]) + (size / 16 - 1) / 2, atol=0.5)


def test_half_tile_stride_averages_the_overlapping_tiles(vit, cmu_svs):
    res = drain(iter_dense_map(vit, cmu_svs, mpp=MPP, min_tissue=0.1, stride_px=112, max_tiles=8))
    assert res.stride_cells == 8
    step = res.grid.size_level0 / 2
    np.testing.assert_array_equal(res.grid.coords, np.round(res.offsets[:, ::-1] / 8 * step))
    proj = res.project(_direct_tokens(vit, cmu_svs, res.grid))
    # two neighbours on one lattice row: their common 16 x 8 cells hold the mean of both tiles' projections
    a, b = next((i, j) for i in range(len(proj)) for j in range(len(proj))
                if res.offsets[j, 0] == res.offsets[i, 0] and res.offsets[j, 1] == res.offsets[i, 1] + 8)  # fmt: skip
    r, c = res.offsets[b]
    both = (proj[a][:, 8:] + proj[b][:, :8]) / 2
    alone = res.counts[r : r + 16, c : c + 8] == 2  # cells no third tile (of the next lattice row) covers
    assert alone.sum() >= 64
    np.testing.assert_allclose(res.scores[r : r + 16, c : c + 8][alone], both[alone], atol=2e-4)
    # and every cell is the mean over the tiles covering it
    sums, counts = np.zeros_like(res.scores, np.float64), np.zeros(res.valid.shape)
    for (r, c), p in zip(res.offsets, proj, strict=True):
        sums[r : r + 16, c : c + 16] += p
        counts[r : r + 16, c : c + 16] += 1
    np.testing.assert_array_equal(res.counts, counts)
    np.testing.assert_allclose(
        res.scores[res.valid], (sums / np.maximum(counts, 1)[..., None])[res.valid], atol=2e-4
    )
    assert res.counts.max() > 2  # tiles of two lattice rows overlap too


def test_cnn_and_bad_strides_are_clear_errors(cmu_svs):
    with pytest.raises(PathDistillError, match="dense maps need a ViT with patch tokens"):
        drain(iter_dense_map(tiny_model("cnn", tile_px=224), cmu_svs, mpp=MPP))
    vit56 = tiny_model("vit", tile_px=56)
    for stride in (20, 0, 70):
        with pytest.raises(PathDistillError, match="multiples of the patch size"):
            drain(iter_dense_map(vit56, cmu_svs, mpp=4.0, stride_px=stride))


def test_cancel_raises_cancelled(cmu_svs):
    cancel = threading.Event()
    items = iter_dense_map(tiny_model("vit", tile_px=56), cmu_svs, mpp=2.0, min_tissue=0.1, batch_size=4,
                           n_fit_tokens=16, cancel=cancel)  # fmt: skip
    seen = []
    with pytest.raises(Cancelled):
        for item in items:
            assert isinstance(item, Progress), "cancelled run returned a map"
            seen.append(item)
            if item.stage == "patch tokens":
                cancel.set()
    assert seen[-1].done < seen[-1].total


def test_a_tile_or_stride_off_the_patch_grid_is_refused_with_a_size_that_works(cmu_svs):
    """Found trying 210 px tiles (15 patches) with a half-tile stride of 100: the refusal suggested 105 px, itself
    refused; and 60 px tiles without a stride were refused as "stride 60 px and tile 60 px" (no stride was set)."""
    import re

    vit = tiny_model("h0-mini", tile_px=56)  # patch 14, dynamic image size: timm takes 60 or 210 px tiles
    with pytest.raises(PathDistillError, match=r"tile 60 px is not a multiple of the patch size of tiny-h0-mini \(14 px\)"
                       r".* e\.g\. 56 or 70 px tiles") as exc:  # fmt: skip
        drain(iter_dense_map(vit, cmu_svs, tile_px=60, mpp=4.0))
    assert "stride" not in str(exc.value)
    with pytest.raises(PathDistillError, match="multiples of the patch size") as exc:
        drain(iter_dense_map(vit, cmu_svs, tile_px=210, mpp=4.0, min_tissue=0.1, stride_px=100))
    suggested = int(re.search(r"e\.g\. (\d+) px", str(exc.value)).group(1))  # type: ignore[union-attr]
    res = drain(iter_dense_map(vit, cmu_svs, tile_px=210, mpp=4.0, min_tissue=0.1, stride_px=suggested))
    assert res.stride_cells == suggested // 14 and res.counts.max() > 1


def test_patch_at_names_the_covering_tile_nearest_its_centre(vit, cmu_svs):
    """Every cell of a half-tile-stride map (covered by 1-4 tiles): ``patch_at`` gives the covering tile whose
    centre is nearest (brute force over all tiles) and the patch within it; None off the cells and off the raster."""
    res = drain(iter_dense_map(vit, cmu_svs, mpp=MPP, min_tissue=0.1, stride_px=112, max_tiles=8))
    centre = res.offsets + 7.5
    for r, c in zip(*np.nonzero(res.valid), strict=True):
        i, pr, pc = res.patch_at(r + 0.3, c - 0.4)  # a position anywhere within the cell
        covering = np.flatnonzero(((res.offsets <= (r, c)) & (res.offsets + 16 > (r, c))).all(1))
        dist = np.abs(centre[covering] - (r, c)).max(1)
        assert i in covering[dist == dist.min()] and (pr, pc) == (
            r - res.offsets[i, 0],
            c - res.offsets[i, 1],
        )
    r, c = np.argwhere(~res.valid)[0]
    h, w = res.valid.shape
    assert res.patch_at(r, c) is None and res.patch_at(-1, 0) is None and res.patch_at(h, w - 1) is None


def test_attrs_record_the_slide_model_and_geometry_as_a_feature_file_does(vit, cmu_svs):
    res = drain(iter_dense_map(vit, cmu_svs, mpp=MPP, min_tissue=0.1, stride_px=112, max_tiles=2))
    a = res.attrs
    assert a["slide_path"] == str(cmu_svs.resolve()) and a["model"] == vit.spec.name == res.model_name
    assert (a["tile_px"], a["mpp"], a["min_tissue"], a["stride_px"]) == (224, MPP, 0.1, 112)
    assert a["weights"] == vit.weights_id
