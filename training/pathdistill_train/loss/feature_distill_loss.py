"""Feature-level distillation: cosine + smooth-L1 on CLS and patch tokens (for teachers without heads)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def _tokens_to_grid(tokens: torch.Tensor) -> torch.Tensor:
    """(B, N, D) square token grid -> (B, D, h, w)."""
    b, n, d = tokens.shape
    side = math.isqrt(n)
    if side * side != n:
        raise ValueError(f"patch tokens do not form a square grid: N={n}")
    return tokens.transpose(1, 2).reshape(b, d, side, side)


def resize_patch_grid(tokens: torch.Tensor, n_out: int) -> torch.Tensor:
    """Bilinearly interpolate a square patch-token grid to ``n_out`` tokens.

    Args:
        tokens: (B, N, D) tokens of a sqrt(N) x sqrt(N) grid (row-major).
        n_out: number of output tokens (a square).

    Returns:
        (B, n_out, D) tokens.
    """
    if tokens.shape[1] == n_out:
        return tokens
    side = math.isqrt(n_out)
    grid = F.interpolate(
        _tokens_to_grid(tokens.float()), size=(side, side), mode="bilinear", align_corners=False
    )
    return grid.flatten(2).transpose(1, 2)


class FeatureDistillLoss(nn.Module):
    """``w_cos * (1 - cos) + w_l1 * smoothL1`` between (adapted) student and teacher features.

    Student features are mapped to the teacher's width by a linear adaptor when the dims differ (the
    adaptor is trained with the student and dropped at export). Teacher patch tokens are interpolated to
    the student's patch grid (e.g. a 7x7 CNN map onto a 16x16 ViT/14 grid).

    Args:
        student_dim: student token width.
        teacher_dim: teacher token width.
        cos_weight: weight of the cosine term.
        smooth_l1_weight: weight of the smooth-L1 term.
        patch_weight: weight of the patch-token terms relative to the CLS terms.
        beta: smooth-L1 beta.
        normalize_teacher: layer-normalise teacher features (no affine) before the loss.
    """

    def __init__(
        self,
        student_dim: int,
        teacher_dim: int,
        cos_weight: float = 1.0,
        smooth_l1_weight: float = 1.0,
        patch_weight: float = 1.0,
        beta: float = 1.0,
        normalize_teacher: bool = True,
    ) -> None:
        super().__init__()
        self.cls_adaptor: nn.Module = nn.Identity()
        self.patch_adaptor: nn.Module = nn.Identity()
        if student_dim != teacher_dim:
            self.cls_adaptor = nn.Linear(student_dim, teacher_dim)
            self.patch_adaptor = nn.Linear(student_dim, teacher_dim)
        self.cos_weight, self.smooth_l1_weight = cos_weight, smooth_l1_weight
        self.patch_weight, self.beta, self.normalize_teacher = patch_weight, beta, normalize_teacher

    def _term(self, s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Cosine + smooth-L1 between (..., D) tensors, averaged over all leading dims."""
        s, t = s.float(), t.float()
        if self.normalize_teacher:
            t = F.layer_norm(t, t.shape[-1:])
        cos = 1.0 - F.cosine_similarity(s, t, dim=-1).mean()
        l1 = F.smooth_l1_loss(s, t, beta=self.beta)
        return self.cos_weight * cos + self.smooth_l1_weight * l1

    def cls_term(self, student_cls: torch.Tensor, teacher_cls: torch.Tensor) -> torch.Tensor:
        """CLS term between (B, Ds) student and (B, Dt) teacher CLS (or pooled) features."""
        return self._term(self.cls_adaptor(student_cls), teacher_cls)

    def patch_term(self, student_patch: torch.Tensor, teacher_patch: torch.Tensor | None) -> torch.Tensor:
        """Weighted patch term between (B, Ns, Ds) and (B, Nt, Dt) tokens of the same views (0 without)."""
        if teacher_patch is None:
            return student_patch.new_zeros((), dtype=torch.float32)
        t_patch = resize_patch_grid(teacher_patch, student_patch.shape[1])
        return self.patch_weight * self._term(self.patch_adaptor(student_patch), t_patch)

    def forward(
        self,
        student_cls: torch.Tensor,
        student_patch: torch.Tensor,
        teacher_cls: torch.Tensor,
        teacher_patch: torch.Tensor | None,
    ) -> dict[str, torch.Tensor]:
        """Compute the CLS and patch terms of row-aligned student and teacher tokens.

        Args:
            student_cls: (B, Ds) student CLS tokens.
            student_patch: (B, Ns, Ds) student patch tokens.
            teacher_cls: (B, Dt) teacher CLS (or pooled) features.
            teacher_patch: (B, Nt, Dt) teacher patch tokens, or None (CLS only).

        Returns:
            ``{"feat_cls": scalar, "feat_patch": scalar}`` (patch term 0 without teacher patches).
        """
        return {
            "feat_cls": self.cls_term(student_cls, teacher_cls),
            "feat_patch": self.patch_term(student_patch, teacher_patch),
        }
