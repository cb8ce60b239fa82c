"""DINO loss on CLS prototype scores (H0-mini eq. 1; dinov2 ``dino_clstoken_loss.py``)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from pathdistill_train.loss.centering import CenteredTeacherLoss


class DINOLoss(CenteredTeacherLoss):
    """Cross-view cross-entropy between teacher and student CLS prototype distributions.

    Teacher view ``i`` supervises every student view ``j != i`` (with a single view on each side, the
    same view is used). The teacher is centred with an EMA centre (``centering="centering"``) or
    Sinkhorn-Knopp (``centering="sinkhorn_knopp"``) and sharpened with ``teacher_temp``.

    Args:
        out_dim: number of prototypes K.
        student_temp: student temperature (0.1 in the paper).
        center_momentum: EMA momentum of the teacher centre.
        centering: ``"centering"`` or ``"sinkhorn_knopp"``.
    """

    def __init__(
        self,
        out_dim: int,
        student_temp: float = 0.1,
        center_momentum: float = 0.9,
        centering: str = "centering",
    ) -> None:
        super().__init__((1, out_dim), student_temp, center_momentum, centering)

    def forward(self, student_logits: torch.Tensor, teacher_probs: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy over (teacher view, student view) pairs with different indices.

        Args:
            student_logits: (Vs, B, K) student CLS prototype scores.
            teacher_probs: (Vt, B, K) output of :meth:`teacher_probs`.

        Returns:
            Scalar loss: mean over pairs of mean over batch of ``-sum_k t log softmax(s / tau_s)``.
        """
        log_p = F.log_softmax(student_logits.float() / self.student_temp, dim=-1)
        total, n_pairs = student_logits.new_zeros((), dtype=torch.float32), 0
        for i in range(teacher_probs.shape[0]):
            for j in range(log_p.shape[0]):
                if i == j and (teacher_probs.shape[0] > 1 or log_p.shape[0] > 1):
                    continue
                total = total + torch.sum(-teacher_probs[i] * log_p[j], dim=-1).mean()
                n_pairs += 1
        return total / n_pairs
