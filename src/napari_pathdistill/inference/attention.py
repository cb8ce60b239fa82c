"""Attention maps of tiles: ViT CLS->patch attention (last block or rollout), Grad-CAM for CNNs.

ViT attention is timm's own softmax, read from each watched block's explicit attention path (its ``fused_attn``
switched off for the call), so q/k norms and rotary position embeddings (DINOv3, EVA) enter as the model applies
them. Rollout follows Abnar & Zuidema (2020):
per block ``0.5 * A + 0.5 * I``, rows renormalised, multiplied from the first block to the last. Prefix
tokens (CLS and registers) are dropped from the map. CNNs get Grad-CAM (Selvaraju et al. 2017) of the
embedding's squared L2 norm on the last feature map.

Memory: a forward hook folds each block's (B, N, N) attention into the rollout product (or keeps only the last
block's) as soon as it is computed, so a batch never holds more than two (B, N, N) tensors; Grad-CAM runs the
backbone without autograd and differentiates only the pooling head, so no backbone graph is ever built.
"""

from __future__ import annotations

import json
import threading
from functools import lru_cache
from typing import Any

import numpy as np
import timm
import torch

from napari_pathdistill.models.embedding_model import EmbeddingModel
from napari_pathdistill.models.spec import ModelSpec, timm_kwargs

#: what a map is, per ``mode`` (ViT CLS->patch attention) or "cnn" (Grad-CAM on the last feature map), for labels
#: held around a hooked forward (``_vit_raw``): models are shared between tasks (``models.shared``)
_HOOKED = threading.Lock()
METHODS = {
    "last": "last-block attention",
    "rollout": "attention rollout",
    "cnn": "Grad-CAM",
}


def _normalise(maps: torch.Tensor) -> np.ndarray:
    """(B, h, w) -> min-max scaled to [0, 1] per map (constant maps -> 0)."""
    flat = maps.flatten(1)
    lo, hi = flat.min(1, keepdim=True).values, flat.max(1, keepdim=True).values
    out = (flat - lo) / torch.where(hi > lo, hi - lo, torch.ones_like(hi))
    return out.view_as(maps).float().cpu().numpy()


def num_heads(model: EmbeddingModel) -> int:
    """Attention heads of a ViT's blocks (0 for a CNN)."""
    if model.spec.family == "cnn":
        return 0
    block: Any = next(iter(model.module.get_submodule("blocks").children()))
    return int(block.attn.num_heads)


def check_head(model: EmbeddingModel, head: int | None) -> None:
    """Raise ValueError when ``head`` is not None and not a head of ``model`` (CNNs ignore heads)."""
    heads = num_heads(model)
    if head is not None and heads and not 0 <= head < heads:
        raise ValueError(
            f"head {head} out of range: {model.spec.name} has {heads} heads (0-{heads - 1}; -1/None = mean)"
        )


def _attention_modules(model: EmbeddingModel, mode: str) -> list[Any]:
    """The attention modules whose probabilities the map needs (the last block's, or every block's for rollout).

    Raises:
        ValueError: a block's attention is not timm's (no ``attn_drop`` applied to the softmax, no
            ``fused_attn`` switch), so its probabilities cannot be read.
    """
    blocks: list[Any] = list(model.module.get_submodule("blocks").children())
    mods = [blk.attn for blk in (blocks[-1:] if mode == "last" else blocks)]
    if not all(hasattr(m, "attn_drop") and hasattr(m, "fused_attn") for m in mods):
        raise ValueError(
            f"{model.spec.name}: attention maps need timm's attention blocks (Attention, AttentionRope, "
            f"EvaAttention); {type(mods[0]).__name__} is not one"
        )
    return mods


def _vit_raw(model: EmbeddingModel, x: torch.Tensor, mode: str, head: int | None) -> torch.Tensor:
    """(B, 3, H, W) -> (B, g, g) CLS->patch attention (last block or rollout), not normalised.

    The probabilities are timm's own: the watched blocks run their explicit path (``fused_attn`` off for the
    call) and a hook on ``attn_drop`` (identity in eval) reads the (B, heads, N, N) softmax it is given, so q/k
    norms, biases and rotary position embeddings (DINOv3 / EVA) are exactly as the model applies them.
    """
    if mode not in ("last", "rollout"):
        raise ValueError(f"mode must be 'last' or 'rollout', got {mode!r}")
    check_head(model, head)
    mods = _attention_modules(model, mode)
    state: dict[str, torch.Tensor] = {}
    owner = threading.get_ident()

    def fold(_module: Any, args: tuple[torch.Tensor, ...]) -> None:
        if threading.get_ident() != owner:
            return  # another task's forward of this model, shared between tasks (models.shared): not this map's
        a = args[0].float()
        a = a[:, head] if head is not None else a.mean(1)  # (B, N, N)
        if mode == "last":
            state["joint"] = a
            return
        a = 0.5 * a + 0.5 * torch.eye(a.shape[-1], device=a.device)
        a = a / a.sum(-1, keepdim=True)
        # the hook runs inside the forward's autocast: a bf16 product lost the map over 12-40 blocks
        with torch.autocast(a.device.type, enabled=False):
            state["joint"] = a @ state["joint"] if "joint" in state else a

    with _HOOKED:  # one hooked forward at a time: another one would restore fused_attn under this one
        fused = [m.fused_attn for m in mods]
        hooks = [m.attn_drop.register_forward_pre_hook(fold) for m in mods]
        try:
            for m in mods:
                m.fused_attn = False
            amp = model.amp_dtype
            with torch.autocast(x.device.type, dtype=amp, enabled=amp != torch.float32):
                model.forward_tokens(x)
        finally:
            for m, f in zip(mods, fused, strict=True):
                m.fused_attn = f
            for h in hooks:
                h.remove()
    cls = state["joint"][:, 0, model.num_prefix_tokens :]
    g = round(cls.shape[1] ** 0.5)
    return cls.reshape(len(cls), g, g)


def _gradcam(model: EmbeddingModel, x: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) -> (B, h, w) Grad-CAM of 0.5 ||embedding||^2 on the last feature map, not normalised."""
    with torch.inference_mode():
        feats = model.forward_tokens(x)
    with torch.enable_grad():
        feats = feats.clone().requires_grad_(True)  # a leaf: only the pooling head is differentiated
        emb = model.pool(feats)
        (grad,) = torch.autograd.grad(0.5 * emb.pow(2).sum(), feats)
    w = grad.mean((2, 3), keepdim=True)
    return torch.relu((w * feats.detach()).sum(1))


def raw_attention_maps(
    model: EmbeddingModel, tiles: np.ndarray | torch.Tensor, *, mode: str = "last", head: int | None = None
) -> torch.Tensor:
    """(B, H, W, 3) uint8 tiles -> (B, gh, gw) float32 CPU maps on the model's own scale (not normalised).

    ViT maps are attention probabilities (comparable across tiles of one model); Grad-CAM maps are in the
    feature map's units. See :func:`attention_maps` for the arguments.
    """
    x = model.preprocess(tiles)
    if model.spec.family == "cnn":
        return _gradcam(model, x).float().cpu()
    with torch.inference_mode():
        return _vit_raw(model, x, mode, head).float().cpu()


def attention_maps(
    model: EmbeddingModel, tiles: np.ndarray, *, mode: str = "last", head: int | None = None
) -> np.ndarray:
    """(B, H, W, 3) uint8 tiles -> (B, gh, gw) float32 maps, min-max scaled to [0, 1] per tile.

    Args:
        model: a ViT (CLS->patch attention) or CNN (Grad-CAM) :class:`EmbeddingModel`.
        tiles: the tiles.
        mode: "last" (last block) or "rollout" (ViT only; CNNs always give Grad-CAM).
        head: attention head, or None for the mean over heads (ViT only).
    """
    return _normalise(raw_attention_maps(model, tiles, mode=mode, head=head))


@lru_cache(maxsize=64)
def _arch_heads(arch: str, kwargs_json: str) -> int:
    with torch.device("meta"):  # no memory, no weights: the architecture alone
        module = timm.create_model(arch, pretrained=False, **timm_kwargs(json.loads(kwargs_json)))
    block: Any = next(iter(module.get_submodule("blocks").children()))
    return int(block.attn.num_heads)


def spec_heads(spec: ModelSpec) -> int:
    """Attention heads of a spec's ViT without building it for real (0 for a CNN or an unknown arch)."""
    if spec.family == "cnn":
        return 0
    if "num_heads" in spec.model_kwargs:
        return int(spec.model_kwargs["num_heads"])
    try:
        return _arch_heads(spec.arch, json.dumps(spec.model_kwargs, sort_keys=True))
    except Exception:  # an hf-hub id or an arch timm does not know: the heads are known once loaded
        return 0
