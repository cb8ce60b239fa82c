"""iBOT loss on ALL patch tokens without masking (H0-mini eq. 2; dinov2 ``ibot_patch_loss.py``)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pathdistill_train.loss.centering import _all_reduce_sum, sinkhorn_knopp, world_size


class iBOTPatchLoss(nn.Module):
    """Patch-level cross-entropy between teacher and student prototype distributions of the SAME view.

    For one view, teacher patch ``p`` and student patch ``p`` see the same pixels, so every patch token
    of every view is distilled (no masking, as in H0-mini).

    Args:
        patch_out_dim: number of patch prototypes K.
        student_temp: student temperature.
        center_momentum: EMA momentum of the patch centre.
        centering: ``"centering"`` or ``"sinkhorn_knopp"``.
    """

    def __init__(
        self,
        patch_out_dim: int,
        student_temp: float = 0.1,
        center_momentum: float = 0.9,
        centering: str = "centering",
    ) -> None:
        super().__init__()
        self.center: torch.Tensor
        if centering not in ("centering", "sinkhorn_knopp"):
            raise ValueError(f"centering must be 'centering' or 'sinkhorn_knopp', got {centering!r}")
        self.student_temp = student_temp
        self.center_momentum = center_momentum
        self.centering = centering
        self.register_buffer("center", torch.zeros(1, 1, patch_out_dim))

    def teacher_probs(self, teacher_logits: torch.Tensor, teacher_temp: float) -> torch.Tensor:
        """Centre and sharpen teacher patch scores.

        Args:
            teacher_logits: (B, N, K) patch prototype scores (views stacked in B).
            teacher_temp: teacher temperature.

        Returns:
            (B, N, K) probabilities.
        """
        b, n, k = teacher_logits.shape
        if self.centering == "sinkhorn_knopp":
            return sinkhorn_knopp(teacher_logits.reshape(b * n, k), teacher_temp).reshape(b, n, k)
        return F.softmax((teacher_logits.float() - self.center) / teacher_temp, dim=-1)

    def forward(self, student_logits: torch.Tensor, teacher_probs: torch.Tensor) -> torch.Tensor:
        """Mean over samples and patches of ``-sum_k t log softmax(s / tau_s)``.

        Args:
            student_logits: (B, N, K) student patch prototype scores.
            teacher_probs: (B, N, K) teacher probabilities for the same views and patches.

        Returns:
            Scalar loss.
        """
        if student_logits.shape != teacher_probs.shape:
            raise ValueError(f"student {tuple(student_logits.shape)} != teacher {tuple(teacher_probs.shape)}")
        log_p = F.log_softmax(student_logits.float() / self.student_temp, dim=-1)
        return torch.sum(-teacher_probs * log_p, dim=-1).mean()

    @torch.no_grad()
    def update_center(self, teacher_logits: torch.Tensor) -> None:
        """EMA update of the patch centre with the mean over samples and patches (all ranks).

        Args:
            teacher_logits: (B, N, K) raw teacher patch scores.
        """
        flat = teacher_logits.float().reshape(-1, teacher_logits.shape[-1])
        batch_center = _all_reduce_sum(flat.sum(dim=0)) / (flat.shape[0] * world_size())
        self.center.mul_(self.center_momentum).add_(
            batch_center.view(1, 1, -1), alpha=1 - self.center_momentum
        )
