"""Tiny randomly initialised models of the project's architectures, for fast CPU tests (no weights)."""

from __future__ import annotations

import dataclasses

import torch

from napari_pathdistill.models.embedding_model import EmbeddingModel
from napari_pathdistill.models.registry import get_spec
from napari_pathdistill.models.spec import IMAGENET_MEAN, IMAGENET_STD, ModelSpec, build_module

#: what ``tiny_model`` overrides in a registry ViT spec: only the size, never the contract
TINY_VIT = {"depth": 2, "embed_dim": 48, "num_heads": 2}


def tiny_spec(name: str, *, tile_px: int = 56) -> ModelSpec:
    """The registry spec ``name`` at tiny size: ViTs get ``TINY_VIT`` depth/width/heads and ``img_size``.

    Everything else (arch, patch size, register tokens, SwiGLUPacked/SiLU MLP, mlp_ratio, init_values,
    embedding rule, normalisation) is the registry's, so tests exercise the real contracts. CNN entries keep
    their full (small) architecture.

    Args:
        name: a registry name, e.g. "h-optimus-0", "h0-mini", "h0-mini-cls", "uni", "uni2-h".
        tile_px: tile side; a multiple of the ViT's patch size.
    """
    spec = get_spec(name)
    kwargs = dict(spec.model_kwargs)
    if spec.family == "vit":
        kwargs.update(TINY_VIT, img_size=tile_px)
    return dataclasses.replace(spec, name=f"tiny-{name}", model_kwargs=kwargs, tile_px=tile_px, weights=None)


def tiny_model(family: str = "vit", *, tile_px: int = 56, seed: int = 0) -> EmbeddingModel:
    """A tiny random model on the CPU (float32).

    Args:
        family: "vit" (``vit_small_patch14_reg4_dinov2``, 2 blocks, width 48, 4 register tokens, CLS
            embedding), "cnn" (``tf_efficientnet_lite0`` pooled embedding, same family as the EfficientNet-Lite2
            teacher, for Grad-CAM paths), or a registry name (see :func:`tiny_spec`).
        tile_px: tile side; a multiple of 14 for the DINOv2-style ViTs, of 16 for "uni".
        seed: torch seed of the random initialisation.
    """
    torch.manual_seed(seed)
    if family == "vit":
        kw = {"img_size": tile_px, "num_classes": 0, **TINY_VIT}
        spec = ModelSpec("tiny-vit", "vit_small_patch14_reg4_dinov2", kw, tile_px=tile_px)
    elif family == "cnn":
        spec = ModelSpec("tiny-cnn", "tf_efficientnet_lite0", {"num_classes": 0}, IMAGENET_MEAN, IMAGENET_STD, tile_px=tile_px,
                         embedding="pool", family="cnn")  # fmt: skip
    else:
        spec = tiny_spec(family, tile_px=tile_px)
    return EmbeddingModel(spec, build_module(spec), "cpu", amp="fp32")
