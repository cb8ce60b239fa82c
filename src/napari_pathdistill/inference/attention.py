"""Attention maps of tiles: ViT CLS->patch attention (last block or rollout), Grad-CAM for CNNs.

ViT attention is recomputed from each block's attention input (``softmax(q k^T / sqrt(d))`` with the block's
own q/k norms), so it works whether timm uses fused attention or not. Rollout follows Abnar & Zuidema (2020):
per block ``0.5 * A + 0.5 * I``, rows renormalised, multiplied from the first block to the last. Prefix
tokens (CLS and registers) are dropped from the map. CNNs get Grad-CAM (Selvaraju et al. 2017) of the
embedding's squared L2 norm on the last feature map.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from napari_pathdistill.models.embedding_model import EmbeddingModel


def _normalise(maps: torch.Tensor) -> np.ndarray:
    """(B, h, w) -> min-max scaled to [0, 1] per map (constant maps -> 0)."""
    flat = maps.flatten(1)
    lo, hi = flat.min(1, keepdim=True).values, flat.max(1, keepdim=True).values
    out = (flat - lo) / torch.where(hi > lo, hi - lo, torch.ones_like(hi))
    return out.view_as(maps).float().cpu().numpy()


def _block_attentions(model: EmbeddingModel, x: torch.Tensor) -> list[torch.Tensor]:
    """(B, 3, H, W) -> per block (B, heads, N, N) attention probabilities."""
    inputs: list[torch.Tensor] = []
    blocks: list[Any] = list(model.module.get_submodule("blocks").children())
    hooks = [blk.attn.register_forward_pre_hook(lambda _m, args: inputs.append(args[0])) for blk in blocks]
    try:
        model.forward_tokens(x)
    finally:
        for h in hooks:
            h.remove()
    out = []
    for blk, t in zip(blocks, inputs, strict=True):
        a = blk.attn
        b, n, _ = t.shape
        qkv = a.qkv(t).reshape(b, n, 3, a.num_heads, a.head_dim).permute(2, 0, 3, 1, 4)
        q, k = a.q_norm(qkv[0]), a.k_norm(qkv[1])
        out.append(((q * a.scale) @ k.transpose(-2, -1)).softmax(-1))
    return out


def _vit_maps(model: EmbeddingModel, x: torch.Tensor, mode: str, head: int | None) -> torch.Tensor:
    atts = _block_attentions(model, x)
    heads = atts[0].shape[1]
    if head is not None and not 0 <= head < heads:
        raise ValueError(f"head {head} out of range: this model has {heads} heads (use -1/None for the mean)")
    pick = [a[:, head] if head is not None else a.mean(1) for a in atts]  # (B, N, N) each
    if mode == "last":
        joint = pick[-1]
    elif mode == "rollout":
        eye = torch.eye(pick[0].shape[-1], device=x.device)
        joint = eye.expand_as(pick[0])
        for a in pick:
            a = 0.5 * a + 0.5 * eye
            joint = (a / a.sum(-1, keepdim=True)) @ joint
    else:
        raise ValueError(f"mode must be 'last' or 'rollout', got {mode!r}")
    p = model.num_prefix_tokens
    cls = joint[:, 0, p:]
    g = round(cls.shape[1] ** 0.5)
    return cls.reshape(len(cls), g, g)


def _gradcam(model: EmbeddingModel, x: torch.Tensor) -> torch.Tensor:
    with torch.enable_grad():
        feats = model.forward_tokens(x.requires_grad_(False))
        emb = model.pool(feats)
        (grad,) = torch.autograd.grad(0.5 * emb.pow(2).sum(), feats)
        w = grad.mean((2, 3), keepdim=True)
        return torch.relu((w * feats).sum(1)).detach()


def attention_maps(
    model: EmbeddingModel, tiles: np.ndarray, *, mode: str = "last", head: int | None = None
) -> np.ndarray:
    """(B, H, W, 3) uint8 tiles -> (B, gh, gw) float32 maps in [0, 1].

    Args:
        model: a ViT (CLS->patch attention) or CNN (Grad-CAM) :class:`EmbeddingModel`.
        tiles: the tiles.
        mode: "last" (last block) or "rollout" (ViT only; CNNs always give Grad-CAM).
        head: attention head, or None for the mean over heads (ViT only).
    """
    x = model.preprocess(tiles)
    if model.spec.family == "cnn":
        return _normalise(_gradcam(model, x))
    with torch.inference_mode():
        return _normalise(_vit_maps(model, x, mode, head))
