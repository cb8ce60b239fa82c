"""EmbeddingModel: a timm encoder plus its normalisation and embedding rule (CLS, CLS+mean patch, pooled)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

if TYPE_CHECKING:
    from napari_pathdistill.models.registry import ModelSpec


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` -> CUDA, else MPS, else CPU; anything else as given."""
    if str(device) != "auto":
        return torch.device(device)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


class EmbeddingModel:
    """Wraps a timm module for tile embedding.

    Args:
        spec: the model's :class:`~napari_pathdistill.models.registry.ModelSpec`.
        module: the timm module (``num_classes=0``), already holding its weights.
        device: where to run it.
    """

    def __init__(self, spec: ModelSpec, module: nn.Module, device: torch.device | str = "cpu") -> None:
        self.spec = spec
        self.device = torch.device(device)
        self.module = module.eval().to(self.device)
        self.num_prefix_tokens = int(getattr(module, "num_prefix_tokens", 0))
        width = int(getattr(module, "num_features", 0) or getattr(module, "embed_dim", 0))
        self.dim = 2 * width if spec.embedding == "cls+mean" else width
        self._mean = torch.tensor(spec.mean, device=self.device).view(1, 3, 1, 1)
        self._std = torch.tensor(spec.std, device=self.device).view(1, 3, 1, 1)

    def preprocess(self, tiles: np.ndarray) -> torch.Tensor:
        """(B, H, W, 3) uint8 -> (B, 3, H, W) float32 normalised, on the model's device."""
        x = (
            torch.as_tensor(np.ascontiguousarray(tiles), device=self.device).permute(0, 3, 1, 2).float()
            / 255.0
        )
        return (x - self._mean) / self._std

    def forward_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, N_prefix + N_patch, D) normalised tokens (ViTs) or (B, C, h, w) maps (CNNs)."""
        return self.module.forward_features(x)

    def pool(self, feats: torch.Tensor) -> torch.Tensor:
        """Tokens/maps from :meth:`forward_tokens` -> (B, dim) embedding following ``spec.embedding``."""
        if self.spec.family == "cnn":
            return self.module.forward_head(feats, pre_logits=True)
        cls = feats[:, 0]
        if self.spec.embedding == "cls+mean":
            return torch.cat([cls, feats[:, self.num_prefix_tokens :].mean(1)], dim=1)
        return cls

    @torch.inference_mode()
    def embed(self, tiles: np.ndarray) -> np.ndarray:
        """(B, H, W, 3) uint8 tiles -> (B, dim) float32 embeddings."""
        return self.pool(self.forward_tokens(self.preprocess(tiles))).float().cpu().numpy()
