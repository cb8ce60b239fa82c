"""Attention rollout (Abnar & Zuidema 2020) of the teacher / student architectures, against a hand computation.

Reference: every block's softmax as the model computes it (a hook on timm's ``attn_drop``, the explicit path),
heads averaged, ``0.5 A + 0.5 I`` with rows renormalised, multiplied from the first block to the last in
float64; the map is the CLS row over the patch tokens (CLS and the 4 registers dropped, not renormalised).
Under bf16 autocast (the default on CUDA) the product was taken in bf16 inside the forward's autocast: over the
12 blocks of an H0-mini-shaped ViT its error was larger than the map's own spatial variation (r 0.25-0.94
with the float product of the same attention).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from napari_pathdistill.inference.attention import raw_attention_maps
from napari_pathdistill.models.embedding_model import EmbeddingModel
from napari_pathdistill.models.spec import build_module
from napari_pathdistill.models.testing import tiny_spec


def _h0_mini_shaped(depth: int, amp: str) -> EmbeddingModel:
    """H0-mini's architecture (vit_base_patch14_reg4_dinov2, SwiGLUPacked/SiLU, mlp_ratio 5.33334) at 224 px,
    narrow but ``depth`` blocks deep, random weights."""
    spec = tiny_spec("h0-mini", tile_px=224)
    spec = dataclasses.replace(spec, model_kwargs={**spec.model_kwargs, "depth": depth})
    torch.manual_seed(0)
    return EmbeddingModel(spec, build_module(spec), "cpu", amp=amp)


def _rollout_by_hand(model: EmbeddingModel, tiles: np.ndarray) -> np.ndarray:
    probs: list[torch.Tensor] = []
    attns = [blk.attn for blk in model.module.blocks]
    hooks = [
        a.attn_drop.register_forward_pre_hook(lambda _m, args: probs.append(args[0].double())) for a in attns
    ]
    for a in attns:
        a.fused_attn = False
    try:
        amp = model.amp_dtype
        with torch.inference_mode(), torch.autocast("cpu", dtype=amp, enabled=amp != torch.float32):
            model.forward_tokens(model.preprocess(tiles))
    finally:
        for a in attns:
            a.fused_attn = True
        for h in hooks:
            h.remove()
    joint = None
    for p in probs:  # first block first
        a = p.mean(1)
        a = 0.5 * a + 0.5 * torch.eye(a.shape[-1], dtype=torch.float64)
        a = a / a.sum(-1, keepdim=True)
        joint = a if joint is None else a @ joint
    assert model.num_prefix_tokens == 5 and joint is not None  # CLS + 4 registers
    return joint[:, 0, 5:].reshape(len(tiles), 16, 16).numpy()


@pytest.mark.parametrize("amp", ["fp32", "bf16"])
def test_rollout_is_the_float_product_of_the_blocks_attention(amp):
    model = _h0_mini_shaped(12, amp)
    tiles = (np.random.default_rng(3).random((2, 224, 224, 3)) * 255).astype(np.uint8)
    want = _rollout_by_hand(model, tiles)
    got = raw_attention_maps(model, tiles, mode="rollout").numpy()
    assert got.shape == (2, 16, 16)
    # float32 product vs float64: far below the map's spatial spread (the bf16 product erred by 3-30 spreads)
    spread = want.reshape(2, -1).std(1)
    err = np.abs(got - want).reshape(2, -1).max(1)
    assert np.all(err < 1e-3 * spread), (err, spread)
    for g, w in zip(got, want, strict=True):
        assert np.corrcoef(g.ravel(), w.ravel())[0, 1] > 0.9999
