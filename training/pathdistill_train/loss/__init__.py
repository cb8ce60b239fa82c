"""Distillation losses, one per file (dinov2 layout)."""

from pathdistill_train.loss.cka_distill_loss import CKADistillLoss
from pathdistill_train.loss.dino_clstoken_loss import DINOLoss
from pathdistill_train.loss.feature_distill_loss import FeatureDistillLoss
from pathdistill_train.loss.ibot_patch_loss import iBOTPatchLoss
from pathdistill_train.loss.relational_distill_loss import RelationalDistillLoss

__all__ = ["CKADistillLoss", "DINOLoss", "FeatureDistillLoss", "RelationalDistillLoss", "iBOTPatchLoss"]
