"""DINOv2-style multi-view augmentations plus histology stain (HED) jitter.

Mirrors dinov2 ``data/augmentations.py``: two global crops (the first always blurred, the second blurred
with p=0.1 and solarised with p=0.2), optional local crops (blur p=0.5), flips, colour jitter p=0.8 and
grayscale p=0.2. Pathology additions: vertical flips and HED optical-density jitter.
"""

from __future__ import annotations

from typing import Any

import torch
from torchvision.transforms import v2

from pathdistill_train.data.stain import RandomHEDJitter


def _photometric(cfg: Any, blur_p: float, solarize_p: float) -> list[torch.nn.Module]:
    """Colour jitter, grayscale, HED jitter, blur and solarisation on float [0, 1] images."""
    cj = cfg.color_jitter
    ops: list[torch.nn.Module] = [
        v2.RandomApply([v2.ColorJitter(cj[0], cj[1], cj[2], cj[3])], p=cfg.color_jitter_p),
        v2.RandomGrayscale(p=cfg.grayscale_p),
        RandomHEDJitter(sigma=cfg.hed_sigma, bias=cfg.hed_bias, p=cfg.hed_p),
    ]
    if blur_p > 0:
        ops.append(v2.RandomApply([v2.GaussianBlur(9, sigma=(0.1, 2.0))], p=blur_p))
    if solarize_p > 0:
        ops.append(v2.RandomSolarize(threshold=0.5, p=solarize_p))
    return ops


class DataAugmentationDistill:
    """Make the views of one tile.

    Args:
        cfg: the ``augmentation`` config node (see ``configs/default.yaml``).
        global_size: side of the global views in pixels (times ``xmag_factor`` in cross-magnification mode).
    """

    def __init__(self, cfg: Any, global_size: int) -> None:
        flips = [v2.RandomHorizontalFlip(0.5), v2.RandomVerticalFlip(0.5 if cfg.vertical_flip else 0.0)]
        to_float = v2.ToDtype(torch.float32, scale=True)

        def crop(size: int, scale: tuple) -> v2.RandomResizedCrop:
            return v2.RandomResizedCrop(
                size, scale=scale, interpolation=v2.InterpolationMode.BICUBIC, antialias=True
            )

        gscale, lscale = tuple(cfg.global_crops_scale), tuple(cfg.local_crops_scale)
        self.global1 = v2.Compose([crop(global_size, gscale), *flips, to_float, *_photometric(cfg, 1.0, 0.0)])
        self.global2 = v2.Compose([crop(global_size, gscale), *flips, to_float, *_photometric(cfg, 0.1, 0.2)])
        self.local = v2.Compose(
            [crop(cfg.local_crops_size, lscale), *flips, to_float, *_photometric(cfg, 0.5, 0.0)]
        )
        self.n_local = int(cfg.local_crops_number)

    def __call__(self, tile: torch.Tensor) -> dict[str, torch.Tensor]:
        """Augment one tile.

        Args:
            tile: (3, H, W) uint8 RGB.

        Returns:
            ``{"global": (2, 3, G, G) float in [0, 1], "local": (L, 3, l, l)}`` (L may be 0).
        """
        out = {"global": torch.stack([self.global1(tile), self.global2(tile)]).clamp(0, 1)}
        if self.n_local:
            out["local"] = torch.stack([self.local(tile) for _ in range(self.n_local)]).clamp(0, 1)
        else:
            out["local"] = torch.zeros(0, 3, 1, 1)
        return out
