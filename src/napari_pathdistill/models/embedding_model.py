"""EmbeddingModel: a timm encoder plus its normalisation and embedding rule (CLS, CLS+mean patch, pooled)."""

from __future__ import annotations

import functools
import hashlib
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

if TYPE_CHECKING:
    from napari_pathdistill.models.spec import ModelSpec


AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
#: tiles per forward on the CPU (:meth:`EmbeddingModel.embed` splits a larger batch): the float32 input and
#: every activation scale with it, and glibc keeps the heap a larger forward touched; the read + embed pipeline
#: runs as many tiles/s at 16 as at 32 (docs/benchmarks.md), with half the transient
CPU_FORWARD_TILES = 16


def resolve_amp(amp: str, device: torch.device) -> torch.dtype:
    """Autocast dtype: ``"auto"`` -> bfloat16 on CUDA, float32 elsewhere; else "bf16" | "fp16" | "fp32"."""
    if amp == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if amp not in AMP_DTYPES:
        raise ValueError(f"amp must be 'auto', 'bf16', 'fp16' or 'fp32', got {amp!r}")
    return AMP_DTYPES[amp]


class EmbeddingModel:
    """Wraps a timm module for tile embedding.

    Args:
        spec: the model's :class:`~napari_pathdistill.models.spec.ModelSpec`.
        module: the timm module (``num_classes=0``), already holding its weights.
        device: where to run it.
        amp: autocast dtype of :meth:`embed` (see :func:`resolve_amp`); weights stay float32.
    """

    def __init__(
        self, spec: ModelSpec, module: nn.Module, device: torch.device | str = "cpu", *, amp: str = "auto"
    ) -> None:
        self.spec = spec
        self.device = torch.device(device)
        self.module = module.eval().to(self.device)
        self.amp_dtype = resolve_amp(amp, self.device)
        self.num_prefix_tokens = int(getattr(module, "num_prefix_tokens", 0))
        width = int(getattr(module, "num_features", 0) or getattr(module, "embed_dim", 0))
        self.dim = 2 * width if spec.embedding == "cls+mean" else width
        self._mean = torch.tensor(spec.mean, device=self.device).view(1, 3, 1, 1)
        self._std = torch.tensor(spec.std, device=self.device).view(1, 3, 1, 1)

    @property
    def amp_name(self) -> str:
        """The autocast dtype of :meth:`embed` by name ("float32", "bfloat16"): recorded with saved features, whose
        values depend on it (a CUDA run's bfloat16 rows are not a CPU run's float32 ones)."""
        return str(self.amp_dtype).removeprefix("torch.")

    @functools.cached_property
    def weights_id(self) -> str:
        """16 hex digits naming the loaded weights: a SHA-1 of every state-dict entry's name, shape, dtype and up to
        4,096 evenly strided values. Two checkpoints of one name and architecture (e.g. a new bundled student)
        differ, so feature files and caches of one are never taken for the other; cheap at 1.1 B parameters."""
        digest = hashlib.sha1(usedforsecurity=False)
        with torch.no_grad():
            for name, tensor in self.module.state_dict().items():
                flat = tensor.detach().reshape(-1)
                sample = flat[:: max(1, flat.numel() // 4096)][:4096].float().cpu().numpy()
                digest.update(f"{name}|{tuple(tensor.shape)}|{tensor.dtype}|".encode())
                digest.update(sample.tobytes())
        return digest.hexdigest()[:16]

    def host_tensor(self, tiles: np.ndarray) -> torch.Tensor:
        """(B, H, W, 3) uint8 -> CPU uint8 tensor, in pinned memory when the model runs on CUDA.

        Called from reader threads so that :meth:`preprocess` can copy to the GPU with ``non_blocking=True``.
        """
        host = torch.from_numpy(np.ascontiguousarray(tiles))
        return host.pin_memory() if self.device.type == "cuda" else host

    def preprocess(self, tiles: np.ndarray | torch.Tensor) -> torch.Tensor:
        """(B, H, W, 3) uint8 (array or :meth:`host_tensor`) -> (B, 3, H, W) float32 normalised on the device.

        The uint8 tiles travel to the device (4x fewer bytes than float32), asynchronously from pinned memory.
        The float32 batch is normalised in place: one (B, 3, H, W) buffer instead of three alive at once
        (19 MB each for 32 tiles of 224 px), the same values.
        """
        host = tiles if isinstance(tiles, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(tiles))
        x = host.to(self.device, non_blocking=host.is_pinned()).permute(0, 3, 1, 2)
        x = x.to(torch.float32, copy=True)  # our own buffer, never the caller's tensor (a float input too)
        return x.div_(255.0).sub_(self._mean).div_(self._std)

    def forward_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, N_prefix + N_patch, D) normalised tokens (ViTs) or (B, C, h, w) maps (CNNs)."""
        return self.module.forward_features(x)  # type: ignore[operator]

    def pool(self, feats: torch.Tensor) -> torch.Tensor:
        """Tokens/maps from :meth:`forward_tokens` -> (B, dim) embedding following ``spec.embedding``."""
        if self.spec.family == "cnn":
            return self.module.forward_head(feats, pre_logits=True)  # type: ignore[operator]
        cls = feats[:, 0]
        if self.spec.embedding == "cls+mean":
            return torch.cat([cls, feats[:, self.num_prefix_tokens :].mean(1)], dim=1)
        return cls

    def embed(self, tiles: np.ndarray | torch.Tensor) -> np.ndarray:
        """(B, H, W, 3) uint8 tiles -> (B, dim) float32 embeddings, under autocast to ``amp_dtype``.

        float32 (CPU/MPS default) runs without autocast, so results are those of the float32 module. On the CPU
        the forward takes at most :data:`CPU_FORWARD_TILES` tiles at a time (bounded activation memory).
        """
        step = CPU_FORWARD_TILES if self.device.type == "cpu" else len(tiles)
        if len(tiles) <= step:
            return self._embed(tiles)
        return np.concatenate([self._embed(tiles[i : i + step]) for i in range(0, len(tiles), step)])

    @torch.inference_mode()
    def _embed(self, tiles: np.ndarray | torch.Tensor) -> np.ndarray:
        x = self.preprocess(tiles)
        if self.amp_dtype == torch.float32:
            out = self.pool(self.forward_tokens(x))
        else:
            with torch.autocast(self.device.type, dtype=self.amp_dtype):
                out = self.pool(self.forward_tokens(x))
        # contiguous: the CLS embedding is a view into the (B, N, D) tokens, which would stay alive with it
        return out.float().contiguous().cpu().numpy()
