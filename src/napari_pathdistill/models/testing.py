"""Tiny randomly initialised models of the project's architectures, for fast CPU tests (no weights)."""

from __future__ import annotations

import timm
import torch

from napari_pathdistill.models.embedding_model import EmbeddingModel
from napari_pathdistill.models.registry import IMAGENET_MEAN, IMAGENET_STD, ModelSpec


def tiny_model(family: str = "vit", *, tile_px: int = 56, seed: int = 0) -> EmbeddingModel:
    """A tiny ``vit_small_patch14_reg4_dinov2`` (2 blocks, width 48, 4 register tokens) or a CNN.

    Args:
        family: "vit" (DINOv2-style ViT with registers, CLS embedding) or "cnn" (``tf_efficientnet_lite0``
            pooled embedding, same family as the EfficientNet-Lite2 teacher, for Grad-CAM paths).
        tile_px: tile side; a multiple of 14 for the ViT.
        seed: torch seed of the random initialisation.
    """
    torch.manual_seed(seed)
    if family == "vit":
        kw = {"img_size": tile_px, "depth": 2, "embed_dim": 48, "num_heads": 2, "num_classes": 0}
        spec = ModelSpec("tiny-vit", "vit_small_patch14_reg4_dinov2", kw, tile_px=tile_px)
    elif family == "cnn":
        kw = {"num_classes": 0}
        spec = ModelSpec("tiny-cnn", "tf_efficientnet_lite0", kw, IMAGENET_MEAN, IMAGENET_STD, tile_px=tile_px,
                         embedding="pool", family="cnn")  # fmt: skip
    else:
        raise ValueError(f"family must be 'vit' or 'cnn', got {family!r}")
    return EmbeddingModel(spec, timm.create_model(spec.arch, pretrained=False, **kw))
