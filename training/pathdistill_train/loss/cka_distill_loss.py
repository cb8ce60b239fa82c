"""Linear-CKA distillation of the exported CLS tokens over a batch (Kornblith et al. 2019 as a loss).

``1 - CKA(student view j, teacher view i)`` on the (B, Ds) student and (B, Dt) teacher CLS features of a batch:
CKA compares the centred linear structure of the two sets of features (which tiles lie where, relative to each
other), is invariant to rotations and isotropic scaling and ignores a constant component, so it asks the
student for the teacher's geometry without an adaptor. The plugin's evaluation measures the same quantity over
the benchmark tiles (``metrics.agreement.linear_cka``, target >= 0.7 in issue 14).
"""

from __future__ import annotations

import torch
from torch import nn


def batch_linear_cka(x: torch.Tensor, y: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Linear CKA of (B, D1) and (B, D2) features of the same B images (float32, differentiable).

    ``||Yc^T Xc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F)`` with column-centred ``Xc``, ``Yc``; computed through the
    (B, B) Gram matrices (B is small next to D).
    """
    if len(x) != len(y) or len(x) < 2:
        raise ValueError(
            f"CKA needs the same B >= 2 rows on both sides, got {tuple(x.shape)}, {tuple(y.shape)}"
        )
    xc, yc = x.float() - x.float().mean(0), y.float() - y.float().mean(0)
    kx, ky = xc @ xc.T, yc @ yc.T
    return (kx * ky).sum() / (kx.norm() * ky.norm()).clamp_min(eps)


class CKADistillLoss(nn.Module):
    """``1 - batch_linear_cka(student, teacher)``: 0 when the student's batch geometry is the teacher's."""

    def forward(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        """Loss of (B, Ds) student CLS tokens (not adapted) against (B, Dt) teacher features (detached).

        Returns:
            Scalar in [0, 1].
        """
        return 1.0 - batch_linear_cka(student, teacher.detach())
