"""Network layers used by the trainer."""

from pathdistill_train.layers.dino_head import DINOHead

__all__ = ["DINOHead"]
