"""DINO loss on CLS prototype scores (H0-mini eq. 1; dinov2 ``dino_clstoken_loss.py``)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from pathdistill_train.loss.centering import CenteredTeacherLoss
from pathdistill_train.loss.views import view_pairs


class DINOLoss(CenteredTeacherLoss):
    """Cross-view cross-entropy between teacher and student CLS prototype distributions.

    Teacher view ``i`` supervises every student view ``j != i`` (``pairing="cross"``, eq. 1; with a single
    view on each side, the same view is used) or only ``j == i`` (``pairing="same"``). The teacher is centred with an EMA centre (``centering="centering"``) or
    Sinkhorn-Knopp (``centering="sinkhorn_knopp"``) and sharpened with ``teacher_temp``.

    Args:
        out_dim: number of prototypes K.
        student_temp: student temperature (0.1 in the paper).
        center_momentum: EMA momentum of the teacher centre.
        centering: ``"centering"`` or ``"sinkhorn_knopp"``.
        pairing: ``"cross"`` or ``"same"`` (see :func:`~pathdistill_train.loss.views.view_pairs`).
    """

    def __init__(
        self,
        out_dim: int,
        student_temp: float = 0.1,
        center_momentum: float = 0.9,
        centering: str = "centering",
        pairing: str = "cross",
    ) -> None:
        super().__init__((1, out_dim), student_temp, center_momentum, centering)
        view_pairs(1, 1, pairing)  # validates
        self.pairing = pairing

    def forward(self, student_logits: torch.Tensor, teacher_probs: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy over the (teacher view, student view) pairs of ``pairing``.

        Args:
            student_logits: (Vs, B, K) student CLS prototype scores.
            teacher_probs: (Vt, B, K) output of :meth:`teacher_probs`.

        Returns:
            Scalar loss: mean over pairs of mean over batch of ``-sum_k t log softmax(s / tau_s)``.
        """
        log_p = F.log_softmax(student_logits.float() / self.student_temp, dim=-1)
        pairs = view_pairs(teacher_probs.shape[0], log_p.shape[0], self.pairing)
        terms = [torch.sum(-teacher_probs[i] * log_p[j], dim=-1).mean() for i, j in pairs]
        return torch.stack(terms).mean()
