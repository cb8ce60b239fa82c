"""Small builders of the distillation meta-architecture: heads and their losses, the student's kwargs and
scanner-augmentation config, and the XMAG token crop."""

from __future__ import annotations

import math
from typing import Any

import torch

from pathdistill_train.data.scanner_augment import ScannerAugmentConfig
from pathdistill_train.layers import DINOHead
from pathdistill_train.loss import DINOLoss, iBOTPatchLoss


def build_head(cfg: Any, dim: int, kind: str) -> DINOHead:
    """The ``heads`` config's DINO (``kind="dino"``) or iBOT head on (..., ``dim``) tokens."""
    h = cfg.heads
    out = h.dino_out_dim if kind == "dino" else h.ibot_out_dim
    bottleneck = h.dino_bottleneck_dim if kind == "dino" else h.ibot_bottleneck_dim
    return DINOHead(dim, out, h.hidden_dim, bottleneck, h.nlayers)


def head_losses(cfg: Any) -> tuple[DINOLoss, iBOTPatchLoss]:
    """The DINO (CLS) and iBOT (patch) losses of one teacher's heads, each holding that teacher's centres."""
    lc = cfg.loss
    dino = DINOLoss(cfg.heads.dino_out_dim, lc.student_temp, lc.center_momentum, lc.centering, lc.pairing)
    return dino, iBOTPatchLoss(cfg.heads.ibot_out_dim, lc.student_temp, lc.center_momentum, lc.centering)


def scanner_config(aug: Any) -> ScannerAugmentConfig:
    """The ``augmentation.student_*`` keys as a :class:`ScannerAugmentConfig`."""
    return ScannerAugmentConfig(
        p=float(aug.student_p),
        hed_sigma=float(aug.student_hed_sigma),
        hed_bias=float(aug.student_hed_bias),
        gamma=(float(aug.student_gamma[0]), float(aug.student_gamma[1])),
        blur_sigma=(float(aug.student_blur_sigma[0]), float(aug.student_blur_sigma[1])),
        jpeg_quality=(int(aug.student_jpeg_quality[0]), int(aug.student_jpeg_quality[1])),
        resolution=(float(aug.student_resolution[0]), float(aug.student_resolution[1])),
    )


def student_kwargs(cfg: Any) -> dict[str, Any]:
    """``student.model_kwargs``, with ``dynamic_img_size=True`` when local crops are used (unless set).

    Local crops are smaller than the global views; like DINOv2's ViT (which always interpolates its position
    embeddings), the student then resamples its position grid to each input size. The export's config.json
    keeps ``student.model_kwargs`` as written: the weights are the same, and the plugin feeds global-size tiles.
    """
    kwargs = dict(cfg.student.model_kwargs)
    if cfg.augmentation.local_crops_number > 0:
        kwargs.setdefault("dynamic_img_size", True)
    return kwargs


def center_crop_tokens(patch: torch.Tensor, factor: int) -> torch.Tensor:
    """Keep the central ``1/factor`` of a square (B, N, D) token grid (the teacher's field in XMAG mode)."""
    b, n, d = patch.shape
    side = math.isqrt(n)
    keep = max(1, round(side / factor))
    start = (side - keep) // 2
    grid = patch.reshape(b, side, side, d)[:, start : start + keep, start : start + keep]
    return grid.reshape(b, keep * keep, d)
