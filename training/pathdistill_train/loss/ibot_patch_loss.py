"""iBOT loss on ALL patch tokens without masking (H0-mini eq. 2; dinov2 ``ibot_patch_loss.py``)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from pathdistill_train.loss.centering import CenteredTeacherLoss


class iBOTPatchLoss(CenteredTeacherLoss):
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
        super().__init__((1, 1, patch_out_dim), student_temp, center_momentum, centering)

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
