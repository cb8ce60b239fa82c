"""iter_embeddings on a real slide, attention maps vs timm's own attention, PCA/k-means/cosine helpers."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from napari_pathdistill.inference.attention import attention_maps
from napari_pathdistill.inference.embed import EmbeddingResult, iter_embeddings
from napari_pathdistill.inference.slide_maps import SlideMap, iter_slide_map
from napari_pathdistill.models.testing import tiny_model
from napari_pathdistill.progress import Progress, drain
from napari_pathdistill.wsi.pyramid import open_pyramid
from napari_pathdistill.wsi.tiling import make_tile_grid, read_tiles


def test_iter_embeddings_matches_direct_embedding_and_cancels(cmu_svs):
    model = tiny_model(tile_px=56)
    with open_pyramid(cmu_svs) as pyr:
        grid = make_tile_grid(pyr, tile_px=56, mpp=8.0, min_tissue=0.2)
        items = list(iter_embeddings(model, pyr, grid, batch_size=3))
        direct = model.embed(read_tiles(pyr, grid, range(len(grid.coords))))
        cancel = threading.Event()
        cancel.set()
        cancelled = list(iter_embeddings(model, pyr, grid, batch_size=3, cancel=cancel))
    assert all(isinstance(i, Progress) for i in items[:-1]) and items[-2].done == len(grid.coords)
    res = items[-1]
    assert isinstance(res, EmbeddingResult) and res.features.shape == (len(grid.coords), model.dim)
    np.testing.assert_allclose(res.features, direct, rtol=1e-5, atol=1e-6)
    assert not any(isinstance(i, EmbeddingResult) for i in cancelled)


def _timm_attention(model, tiles):
    """Attention probabilities as timm's non-fused path computes them (hooked after softmax)."""
    probs = []
    for blk in model.module.blocks:
        blk.attn.fused_attn = False
        blk.attn.attn_drop.register_forward_hook(lambda _m, _i, out: probs.append(out))
    with torch.no_grad():
        model.module.forward_features(model.preprocess(tiles))
    return probs


def test_last_block_attention_equals_timm_and_rollout_of_one_block():
    rng = np.random.default_rng(0)
    tiles = (rng.random((2, 56, 56, 3)) * 255).astype(np.uint8)
    model = tiny_model(tile_px=56)
    probs = _timm_attention(model, tiles)
    p = model.num_prefix_tokens
    for head in (None, 1):
        a = probs[-1].mean(1) if head is None else probs[-1][:, head]
        expected = a[:, 0, p:].reshape(2, 4, 4).numpy()
        lo, hi = expected.min((1, 2), keepdims=True), expected.max((1, 2), keepdims=True)
        got = attention_maps(model, tiles, mode="last", head=head)
        np.testing.assert_allclose(got, (expected - lo) / (hi - lo), atol=1e-5)
    roll = attention_maps(model, tiles, mode="rollout")
    assert roll.shape == (2, 4, 4) and roll.min() == 0 and roll.max() == pytest.approx(1)
    with pytest.raises(ValueError, match="head"):
        attention_maps(model, tiles, head=5)


def test_cnn_gradcam_is_a_normalised_map():
    tiles = (np.random.default_rng(1).random((2, 64, 64, 3)) * 255).astype(np.uint8)
    maps = attention_maps(tiny_model("cnn", tile_px=64), tiles)
    assert maps.shape == (2, 2, 2) and maps.min() >= 0 and maps.max() == pytest.approx(1)


def test_slide_map_cuts_the_model_s_tiles_unless_told_otherwise(cmu_svs, model_112px_1um):
    """Without tile px / um/px, the tiles are the model's (spec 112 px at 1 um/px), as ``embed_slide`` does."""
    default = drain(iter_slide_map(model_112px_1um, cmu_svs, min_tissue=0.5, k=2))
    assert isinstance(default, SlideMap) and len(default.grid) > 2
    assert (default.grid.tile_px, default.grid.mpp) == (112, 1.0)
    assert default.grid.size_level0 == pytest.approx(112 / 0.499)
    assert default.scale == pytest.approx((112.0, 112.0))  # one grid cell = one tile, in the slide's um
    coarser = drain(iter_slide_map(model_112px_1um, cmu_svs, mpp=4.0, min_tissue=0.5, k=2))
    assert (coarser.grid.tile_px, coarser.grid.mpp) == (112, 4.0)
