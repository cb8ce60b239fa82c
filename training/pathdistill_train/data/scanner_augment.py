"""Student-only stain and scanner augmentation, batched on the training device.

With cross-view pairing (``loss.pairing: cross``) the teacher's output on view i supervises the student on view
j; augmenting only the student's input with what differs between labs and scanners (stain concentrations,
gamma/tone curve, focus blur, JPEG compression, optical resolution) asks the student for an invariance its teacher
may lack, which is how a distilled student can end up more robust than its teacher (H0-mini, PLISM).

Every op acts per sample (its own random parameters, applied with probability ``p``) on a (B, 3, H, W) float
batch in [0, 1], on CPU or CUDA; the teacher never sees these images. JPEG is the exception: whether an image is
compressed is drawn per sample, but the images drawn in one batch share one quality (torchvision's encoder takes
one quality per call, and its CUDA encoder is faster on a list), as ``augmentation.student_jpeg_quality`` says.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torchvision.io import decode_jpeg, encode_jpeg

from pathdistill_train.data.stain import hed_to_rgb, rgb_to_stains


@dataclass(frozen=True)
class ScannerAugmentConfig:
    """Parameters of :class:`ScannerAugment` (``augmentation.student_*`` in ``configs/default.yaml``)."""

    p: float = 0.0
    hed_sigma: float = 0.1
    hed_bias: float = 0.03
    gamma: tuple[float, float] = (0.7, 1.4)
    blur_sigma: tuple[float, float] = (0.1, 1.5)
    jpeg_quality: tuple[int, int] = (40, 95)
    resolution: tuple[float, float] = (0.5, 1.0)


def to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``t`` (a small CPU tensor of random parameters) on ``device`` without a host sync.

    PyTorch's blocking host-to-GPU copy synchronises the stream after the copy, so every per-step parameter
    moved that way would stall the host until the GPU has drained its queue. A non-blocking copy from pageable
    memory is staged at once (safe to free or reuse ``t``) and ordered on the stream, with no sync.
    """
    return t.to(device, non_blocking=True)


def _uniform(n: int, lo: float, hi: float, g: torch.Generator | None) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=g)


def hed_jitter_batch(x: torch.Tensor, alpha: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    """Scale/shift the HED stain concentrations of each image: (B, 3, H, W), (B, 3), (B, 3) -> (B, 3, H, W).

    The identity at ``alpha = 1, beta = 0`` (negative concentrations are kept: :func:`~.stain.rgb_to_stains`)."""
    hed = rgb_to_stains(x.float())
    return hed_to_rgb(
        hed * to_device(alpha, x.device)[..., None, None] + to_device(beta, x.device)[..., None, None]
    )


def gaussian_blur_batch(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian blur with one sigma per image (reflect padding): (B, 3, H, W), (B,) -> same.

    ``sigma`` on the CPU: the kernel's radius is read from it (a GPU ``sigma`` would cost a host sync)."""
    b, c, h, w = x.shape
    radius = max(1, math.ceil(3 * float(sigma.max())))
    t = torch.arange(-radius, radius + 1, dtype=torch.float32, device=x.device)
    k = torch.exp(-0.5 * (t[None] / to_device(sigma, x.device)[:, None].clamp_min(1e-3)) ** 2)
    k = (k / k.sum(1, keepdim=True)).repeat_interleave(c, 0)  # (B * C, 2r + 1)
    y = F.pad(x.reshape(1, b * c, h, w), (radius, radius, radius, radius), mode="reflect")
    y = F.conv2d(y, k[:, None, None, :], groups=b * c)
    y = F.conv2d(y, k[:, None, :, None], groups=b * c)
    return y.reshape(b, c, h, w)


def jpeg_batch(x: torch.Tensor, quality: int) -> torch.Tensor:
    """JPEG-compress and decode each image at ``quality`` (1-100), on the tensor's device where supported."""
    u8 = (x.clamp(0, 1) * 255).round().to(torch.uint8)
    encoded = encode_jpeg(list(u8), quality=int(quality))
    device = "cuda" if x.is_cuda else "cpu"
    # the GPU encoder returns CUDA byte tensors; torchvision's decoder takes its input on the CPU on any device
    decoded = decode_jpeg([e.cpu() for e in encoded], device=device)
    return torch.stack(decoded).to(x.device, torch.float32) / 255.0


def resolution_batch(x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Downsample each image by its ``scale`` (antialiased) and back to its size: a blurrier optical system."""
    h, w = x.shape[-2:]
    out = []
    for img, s in zip(x, scale.tolist(), strict=True):
        small = (max(8, round(h * s)), max(8, round(w * s)))
        low = F.interpolate(img[None], size=small, mode="bilinear", antialias=True, align_corners=False)
        out.append(F.interpolate(low, size=(h, w), mode="bilinear", align_corners=False)[0])
    return torch.stack(out).clamp(0, 1)


class ScannerAugment(torch.nn.Module):
    """Per-sample stain (HED), gamma, blur, resolution and JPEG changes, each with probability ``cfg.p``.

    Args:
        cfg: the parameters; ``p == 0`` makes the module the identity.
    """

    def __init__(self, cfg: ScannerAugmentConfig) -> None:
        super().__init__()
        self.cfg = cfg

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Augment a batch.

        Args:
            x: (B, 3, H, W) float in [0, 1].
            generator: CPU RNG for the parameters (None: the global RNG).

        Returns:
            (B, 3, H, W) float in [0, 1], the input itself where no op was drawn.
        """
        c, b, g = self.cfg, x.shape[0], generator
        if c.p <= 0 or b == 0:
            return x
        x = x.float()
        hed = (_uniform(3 * b, 1 - c.hed_sigma, 1 + c.hed_sigma, g).view(b, 3),
               _uniform(3 * b, -c.hed_bias, c.hed_bias, g).view(b, 3))  # fmt: skip
        x = self._on_drawn(x, hed_jitter_batch, g, *hed)
        x = self._on_drawn(
            x,
            lambda v, e: v.clamp_min(0) ** to_device(e, v.device)[:, None, None, None],
            g,
            _uniform(b, *c.gamma, g),
        )
        x = self._on_drawn(x, gaussian_blur_batch, g, _uniform(b, *c.blur_sigma, g))
        x = self._on_drawn(x, resolution_batch, g, _uniform(b, *c.resolution, g))
        quality = torch.randint(c.jpeg_quality[0], c.jpeg_quality[1] + 1, (b,), generator=g)
        return self._on_drawn(x, lambda v, q: jpeg_batch(v, int(q[0])), g, quality).clamp(0, 1)

    def _on_drawn(self, x: torch.Tensor, op: Callable[..., torch.Tensor], g: torch.Generator | None,
               *params: torch.Tensor) -> torch.Tensor:  # fmt: skip
        """``op(x[sel], *params[sel])`` for the samples drawn with probability p; the others unchanged. The
        draw and the parameters stay on the CPU (the ops read sizes and qualities from them without a sync)."""
        sel = (torch.rand(x.shape[0], generator=g) < self.cfg.p).nonzero().squeeze(1)
        if sel.numel() == 0:
            return x
        out, idx = x.clone(), to_device(sel, x.device)
        out[idx] = op(x[idx], *(p[sel] for p in params)).to(x.dtype)
        return out
