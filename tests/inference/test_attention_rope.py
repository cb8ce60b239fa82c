"""Attention maps of a ViT with rotary position embeddings (DINOv3 in timm: ``vit_*_patch16_dinov3``, EVA blocks).

The map must be the attention the model computes: q and k rotated (patch tokens only) before the softmax.
Reference: the last block's input and rope captured from the model, then q/k, norms, timm's
``apply_rot_embed_cat`` and the softmax written out here.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from timm.layers import apply_rot_embed_cat

from napari_pathdistill.inference.attention import raw_attention_maps
from napari_pathdistill.models.embedding_model import EmbeddingModel
from napari_pathdistill.models.spec import ModelSpec
from napari_pathdistill.models.testing import build_module, tiny_model

KW = {"img_size": 64, "num_classes": 0, "embed_dim": 48, "depth": 2, "num_heads": 2}


def _dinov3() -> EmbeddingModel:
    torch.manual_seed(0)
    spec = ModelSpec("tiny-dinov3", "vit_small_patch16_dinov3", KW, tile_px=64)
    return EmbeddingModel(spec, build_module(spec), "cpu", amp="fp32")


@pytest.fixture(scope="module")
def dinov3() -> EmbeddingModel:
    return _dinov3()


def _tiles(n: int = 2) -> np.ndarray:
    return (np.random.default_rng(0).random((n, 64, 64, 3)) * 255).astype(np.uint8)


def _reference(model: EmbeddingModel, tiles: np.ndarray, with_rope: bool = True) -> torch.Tensor:
    """(B, 4, 4) head-mean CLS -> patch attention of the last block, written out from its captured input."""
    attn = model.module.blocks[-1].attn
    seen: dict = {}

    def grab(_m, args, kwargs):
        seen["x"], seen["rope"] = args[0], kwargs.get("rope")

    h = attn.register_forward_pre_hook(grab, with_kwargs=True)
    with torch.inference_mode():
        model.forward_tokens(model.preprocess(tiles))
    h.remove()
    x, rope = seen["x"], seen["rope"]
    with torch.inference_mode():
        return _by_hand(attn, x, rope, model.num_prefix_tokens, with_rope)


def _by_hand(attn, x: torch.Tensor, rope, npt: int, with_rope: bool) -> torch.Tensor:
    b, n, _ = x.shape
    q, k, _v = attn.qkv(x).reshape(b, n, 3, attn.num_heads, -1).permute(2, 0, 3, 1, 4).unbind(0)
    q, k = attn.q_norm(q), attn.k_norm(k)
    if with_rope:
        assert rope is not None
        half = getattr(attn, "rotate_half", False)  # DINOv3 rotates halves, EVA interleaved pairs
        q = torch.cat([q[:, :, :npt], apply_rot_embed_cat(q[:, :, npt:], rope, half=half)], dim=2)
        k = torch.cat([k[:, :, :npt], apply_rot_embed_cat(k[:, :, npt:], rope, half=half)], dim=2)
    a = ((q * attn.scale) @ k.transpose(-2, -1)).softmax(-1).mean(1)
    return a[:, 0, npt:].reshape(b, 4, 4)


def test_dinov3_attention_includes_its_rotary_embedding(dinov3):
    tiles = _tiles()
    got = raw_attention_maps(dinov3, tiles)
    torch.testing.assert_close(got, _reference(dinov3, tiles), rtol=1e-5, atol=1e-6)
    # the q/k recomputation without rope (what the maps were before) is another map: the test can tell them apart
    assert (got - _reference(dinov3, tiles, with_rope=False)).abs().max() > 1e-3
    assert all(
        m.fused_attn == f for m, f in zip([b.attn for b in dinov3.module.blocks], [True, True])
    )  # restored


def test_standard_vit_maps_equal_the_explicit_softmax_for_every_head_and_rollout():
    vit = tiny_model("vit")
    tiles = (np.random.default_rng(1).random((2, 56, 56, 3)) * 255).astype(np.uint8)
    blk = vit.module.blocks[-1].attn
    x = {}
    h = blk.register_forward_pre_hook(lambda _m, a: x.setdefault("in", a[0]))
    with torch.inference_mode():
        vit.forward_tokens(vit.preprocess(tiles))
        h.remove()
        b, n, _ = x["in"].shape
        q, k, _v = blk.qkv(x["in"]).reshape(b, n, 3, blk.num_heads, -1).permute(2, 0, 3, 1, 4).unbind(0)
        a = ((blk.q_norm(q) * blk.scale) @ blk.k_norm(k).transpose(-2, -1)).softmax(-1)  # (B, H, N, N)
    npt, g = vit.num_prefix_tokens, 4
    for head in range(blk.num_heads):
        want = a[:, head, 0, npt:].reshape(b, g, g)
        torch.testing.assert_close(raw_attention_maps(vit, tiles, head=head), want, rtol=1e-5, atol=1e-6)
    rollout = raw_attention_maps(vit, tiles, mode="rollout")
    assert rollout.shape == (2, g, g) and torch.all(rollout > 0)


def test_attention_blocks_that_are_not_timm_s_are_one_clear_error():
    model = _dinov3()
    del model.module.blocks[-1].attn.attn_drop  # an attention module whose softmax cannot be read
    with pytest.raises(ValueError, match="attention maps need timm's attention blocks"):
        raw_attention_maps(model, _tiles(1))
