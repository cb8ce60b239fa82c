"""Distillation losses, one per file (dinov2 layout)."""

from pathdistill_train.loss.dino_clstoken_loss import DINOLoss
from pathdistill_train.loss.feature_distill_loss import FeatureDistillLoss
from pathdistill_train.loss.ibot_patch_loss import iBOTPatchLoss

__all__ = ["DINOLoss", "FeatureDistillLoss", "iBOTPatchLoss"]
