"""The distillation views made in batches on the training device (``data.pipeline: device``).

The same recipe as :class:`~pathdistill_train.data.augmentations.DataAugmentationDistill` (dinov2's global views:
the first always blurred, the second blurred with p=0.1 and solarised with p=0.2; local crops blurred with
p=0.5; colour jitter p=0.8, grayscale p=0.2, HED stain jitter), plus 90-degree rotations (histology has no
orientation; with ``augmentation.vertical_flip: false`` neither, horizontal flips only), but on a whole
(B, 3, S, S) uint8 batch at once: crops, resizing, flips and rotations are one ``grid_sample`` per view through
per-sample affine grids, and the photometric ops are tensor ops with per-sample parameters. No per-sample PIL work is left for CPU workers, so a GPU is not starved by its loader.

Resizing is bilinear without antialiasing (``grid_sample``); global crops of the default source field are
downscaled by at most ~1.25 x, where this is indistinguishable from torchvision's antialiased bicubic.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from pathdistill_train.data.scanner_augment import gaussian_blur_batch, hed_jitter_batch, to_device

_GREY = torch.tensor([0.299, 0.587, 0.114])


def _u(n: int, lo: float, hi: float, g: torch.Generator | None) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=g)


def crop_grids(
    n: int,
    size: int,
    scale: tuple[float, float],
    g: torch.Generator | None,
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    device: torch.device | str = "cpu",
    rotate: bool = True,
) -> torch.Tensor:
    """Sampling grids of random resized crops with random flips and 90-degree rotations.

    Args:
        n: number of images.
        size: output side in pixels.
        scale: range of the crop's area as a fraction of the image's.
        g: CPU RNG.
        ratio: range of the crop's aspect ratio (log-uniform).
        device: where the grids are made: the (n, 2, 3) affine parameters are drawn on the CPU and moved, the
            grids (n x size x size x 2 floats, 100 MB for 256 views of 224 px) are computed there.
        rotate: also rotate by multiples of 90 degrees (all 8 poses of the square with the flips); False:
            horizontal flips only (``augmentation.vertical_flip: false``: a rotation by 180 degrees and a
            horizontal flip make a vertical one). The same numbers are drawn either way.

    Returns:
        (n, size, size, 2) grids for ``F.grid_sample`` (normalised coordinates, align_corners=False).
    """
    area = _u(n, *scale, g)
    aspect = torch.exp(_u(n, math.log(ratio[0]), math.log(ratio[1]), g))
    half_w, half_h = torch.sqrt(area * aspect).clamp(max=1), torch.sqrt(area / aspect).clamp(max=1)
    margin = torch.maximum(half_w, half_h)
    cx, cy = (_u(n, -1, 1, g) * (1 - margin)), (_u(n, -1, 1, g) * (1 - margin))
    k = torch.randint(0, 4, (n,), generator=g).float() * (math.pi / 2 if rotate else 0.0)
    flip = torch.where(torch.rand(n, generator=g) < 0.5, -1.0, 1.0)
    cos, sin = torch.cos(k).round(), torch.sin(k).round()
    theta = torch.stack([
        torch.stack([cos * half_w * flip, -sin * half_h, cx], -1),
        torch.stack([sin * half_w * flip, cos * half_h, cy], -1),
    ], 1)  # fmt: skip
    return F.affine_grid(to_device(theta, torch.device(device)), [n, 3, size, size], align_corners=False)


def color_jitter_batch(x: torch.Tensor, strength: Any, g: torch.Generator | None) -> torch.Tensor:
    """Brightness, contrast, saturation and hue (YIQ rotation) jitter with per-image factors.

    Args:
        x: (B, 3, H, W) float in [0, 1].
        strength: (brightness, contrast, saturation, hue) as in torchvision's ColorJitter.
        g: CPU RNG.
    """
    b, dev = x.shape[0], x.device
    bri, con, sat, hue = (float(v) for v in strength)
    grey_w = to_device(_GREY, dev)[None, :, None, None]
    x = x * to_device(_u(b, 1 - bri, 1 + bri, g), dev)[:, None, None, None]
    mean = (x * grey_w).sum(1, keepdim=True).mean((2, 3), keepdim=True)
    x = (x - mean) * to_device(_u(b, 1 - con, 1 + con, g), dev)[:, None, None, None] + mean
    grey = (x * grey_w).sum(1, keepdim=True)
    x = (x - grey) * to_device(_u(b, 1 - sat, 1 + sat, g), dev)[:, None, None, None] + grey
    return _hue_rotate(x.clamp(0, 1), to_device(_u(b, -hue, hue, g), dev) * 2 * math.pi)


_TO_YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
# inverted once, on the CPU: on CUDA ``linalg.inv`` checks its result with a host sync
_FROM_YIQ = torch.linalg.inv(_TO_YIQ)


def _hue_rotate(x: torch.Tensor, angle: torch.Tensor) -> torch.Tensor:
    """Rotate the chroma of (B, 3, H, W) RGB by ``angle`` (B,) radians in YIQ space."""
    yiq = torch.einsum("ij,bjhw->bihw", to_device(_TO_YIQ, x.device), x)
    c, s = torch.cos(angle)[:, None, None], torch.sin(angle)[:, None, None]
    i, q = yiq[:, 1] * c - yiq[:, 2] * s, yiq[:, 1] * s + yiq[:, 2] * c
    rgb = torch.einsum("ij,bjhw->bihw", to_device(_FROM_YIQ, x.device), torch.stack([yiq[:, 0], i, q], 1))
    return rgb.clamp(0, 1)


class DeviceViewMaker:
    """Two global views (and local crops) of a uint8 batch, on the batch's device.

    Args:
        cfg: the ``augmentation`` config node.
        global_size: global view side in pixels.
    """

    def __init__(self, cfg: Any, global_size: int) -> None:
        self.cfg, self.global_size = cfg, global_size

    def _where(
        self, x: torch.Tensor, p: float, changed: torch.Tensor, g: torch.Generator | None
    ) -> torch.Tensor:
        keep = to_device(torch.rand(x.shape[0], generator=g) < p, x.device)[:, None, None, None]
        return torch.where(keep, changed, x)

    def _view(self, fields: torch.Tensor, size: int, scale: Any, blur_p: float, solarize_p: float,
              g: torch.Generator | None) -> torch.Tensor:  # fmt: skip
        c, b = self.cfg, fields.shape[0]
        grid = crop_grids(
            b, size, (float(scale[0]), float(scale[1])), g, device=fields.device, rotate=bool(c.vertical_flip)
        )
        x = F.grid_sample(fields, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
        x = self._where(x, c.color_jitter_p, color_jitter_batch(x, c.color_jitter, g), g)
        grey = (x * to_device(_GREY, x.device)[None, :, None, None]).sum(1, keepdim=True).expand_as(x)
        x = self._where(x, c.grayscale_p, grey, g)
        alpha = _u(3 * b, 1 - c.hed_sigma, 1 + c.hed_sigma, g).view(b, 3)
        beta = _u(3 * b, -c.hed_bias, c.hed_bias, g).view(b, 3)
        x = self._where(x, c.hed_p, hed_jitter_batch(x, alpha, beta), g)
        if blur_p > 0:
            x = self._where(x, blur_p, gaussian_blur_batch(x, _u(b, 0.1, 2.0, g)), g)
        if solarize_p > 0:
            x = self._where(x, solarize_p, torch.where(x >= 0.5, 1 - x, x), g)
        return x.clamp(0, 1)

    def __call__(self, tiles: torch.Tensor, g: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """Views of a batch.

        Args:
            tiles: (B, 3, S, S) uint8 fields on the training device.
            g: CPU RNG for every random parameter (the same seed gives the same views on any device).

        Returns:
            ``{"global": (2, B, 3, G, G), "local": (L, B, 3, l, l)}`` float in [0, 1] (L may be 0).
        """
        c, fields = self.cfg, tiles.float() / 255.0
        gs = c.global_crops_scale
        views = [
            self._view(fields, self.global_size, gs, 1.0, 0.0, g),
            self._view(fields, self.global_size, gs, 0.1, 0.2, g),
        ]
        n_local, b = int(c.local_crops_number), tiles.shape[0]
        local = [
            self._view(fields, c.local_crops_size, c.local_crops_scale, 0.5, 0.0, g) for _ in range(n_local)
        ]
        return {
            "global": torch.stack(views),
            "local": torch.stack(local) if local else fields.new_zeros(0, b, 3, 1, 1),
        }
