"""Feature-level distillation: cosine + smooth-L1 on CLS and patch tokens (for teachers without heads)."""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
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

    With ``center_teacher``, the targets are the teacher features minus their running mean over the data
    (an EMA of batch means, like DINO's centre, updated by :meth:`update_center` after each step), and the
    adaptors have no bias. Matching centred targets through a bias-free, injective (Ds < Dt) linear map forces
    the student's own mean feature towards zero; without it the adaptor's bias and a large constant component
    of the student token absorb the teacher's mean, and the exported tokens are nearly parallel for every tile
    (pairwise cosine ~0.99, so cosine retrieval and similarity maps see little but that constant). Centring
    alone does not remove a constant the student already has in a direction the adaptor can null (e.g. from a
    warm start); :meth:`spread_term` penalises it on the exported token itself.

    Args:
        student_dim: student token width.
        teacher_dim: teacher token width.
        cos_weight: weight of the cosine term.
        smooth_l1_weight: weight of the smooth-L1 term.
        patch_weight: weight of the patch-token terms relative to the CLS terms.
        beta: smooth-L1 beta.
        normalize_teacher: layer-normalise teacher features (no affine) before the loss.
        center_teacher: subtract the running mean of the (normalised) teacher features; bias-free adaptors.
        center_momentum: EMA momentum of that mean.
        spread_weight: weight of :meth:`spread_term` (0: off).
    """

    cls_center: torch.Tensor
    patch_center: torch.Tensor
    centered_steps: torch.Tensor

    def __init__(
        self,
        student_dim: int,
        teacher_dim: int,
        cos_weight: float = 1.0,
        smooth_l1_weight: float = 1.0,
        patch_weight: float = 1.0,
        beta: float = 1.0,
        normalize_teacher: bool = True,
        center_teacher: bool = False,
        center_momentum: float = 0.9,
        spread_weight: float = 0.0,
    ) -> None:
        super().__init__()
        self.cls_adaptor: nn.Module = nn.Identity()
        self.patch_adaptor: nn.Module = nn.Identity()
        if student_dim != teacher_dim:
            self.cls_adaptor = nn.Linear(student_dim, teacher_dim, bias=not center_teacher)
            self.patch_adaptor = nn.Linear(student_dim, teacher_dim, bias=not center_teacher)
        self.cos_weight, self.smooth_l1_weight = cos_weight, smooth_l1_weight
        self.patch_weight, self.beta, self.normalize_teacher = patch_weight, beta, normalize_teacher
        self.center_teacher, self.center_momentum = center_teacher, center_momentum
        self.spread_weight = spread_weight
        self.register_buffer("cls_center", torch.zeros(teacher_dim))
        self.register_buffer("patch_center", torch.zeros(teacher_dim))
        self.register_buffer("centered_steps", torch.zeros((), dtype=torch.long))

    def _normalised(self, t: torch.Tensor) -> torch.Tensor:
        """(..., Dt) teacher features in float32, layer-normalised (no affine) when ``normalize_teacher``."""
        t = t.float()
        return F.layer_norm(t, t.shape[-1:]) if self.normalize_teacher else t

    def _target(self, t: torch.Tensor, center: torch.Tensor) -> torch.Tensor:
        """(..., Dt) teacher features -> targets: normalised, then minus ``center`` when centring."""
        t = self._normalised(t)
        return t - center if self.center_teacher else t

    def _term(self, s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Cosine + smooth-L1 between (..., D) student features and targets, averaged over all leading dims."""
        s = s.float()
        cos = 1.0 - F.cosine_similarity(s, t, dim=-1).mean()
        l1 = F.smooth_l1_loss(s, t, beta=self.beta)
        return self.cos_weight * cos + self.smooth_l1_weight * l1

    def cls_target(self, teacher_cls: torch.Tensor) -> torch.Tensor:
        """(B, Dt) teacher CLS (or pooled) features -> the CLS term's targets (normalised, centred if set)."""
        return self._target(teacher_cls, self.cls_center)

    def cls_term(self, student_cls: torch.Tensor, teacher_cls: torch.Tensor) -> torch.Tensor:
        """CLS term between (B, Ds) student and (B, Dt) teacher CLS (or pooled) features."""
        return self._term(self.cls_adaptor(student_cls), self.cls_target(teacher_cls))

    def spread_term(self, student_cls: torch.Tensor) -> torch.Tensor:
        """``spread_weight * ||mean_b normalize(s_b)||^2`` of (B, Ds) student CLS tokens (not adapted): the mean
        cosine over all pairs of the batch (self-pairs included), i.e. how much the exported embeddings share
        one direction. The distillation terms leave a constant component of the student free (the adaptor maps
        it away, or a bias absorbs it), and cosine retrieval then sees mostly that constant."""
        if self.spread_weight == 0:
            return student_cls.new_zeros((), dtype=torch.float32)
        mean = F.normalize(student_cls.float(), dim=-1).mean(0)
        return self.spread_weight * mean.pow(2).sum()

    def patch_term(self, student_patch: torch.Tensor, teacher_patch: torch.Tensor | None) -> torch.Tensor:
        """Weighted patch term between (B, Ns, Ds) and (B, Nt, Dt) tokens of the same views (0 without)."""
        if teacher_patch is None:
            return student_patch.new_zeros((), dtype=torch.float32)
        t_patch = resize_patch_grid(teacher_patch, student_patch.shape[1])
        target = self._target(t_patch, self.patch_center)
        return self.patch_weight * self._term(self.patch_adaptor(student_patch), target)

    @torch.no_grad()
    def update_center(self, teacher_cls: torch.Tensor, teacher_patch: torch.Tensor | None) -> None:
        """EMA update of the teacher means from (B, Dt) CLS and (B, Nt, Dt) patch features of one step (batch
        means averaged over ranks when distributed; the first step sets them). No-op without centring."""
        if not self.center_teacher:
            return
        patch = self._batch_mean(teacher_patch) if teacher_patch is not None else None
        means = (self._batch_mean(teacher_cls), patch)
        first = int(self.centered_steps) == 0
        for center, mean in zip((self.cls_center, self.patch_center), means):
            if mean is None:
                continue
            m = 0.0 if first else self.center_momentum
            center.mul_(m).add_(mean, alpha=1.0 - m)
        self.centered_steps.add_(1)

    def _batch_mean(self, t: torch.Tensor) -> torch.Tensor:
        """(Dt,) mean of the normalised teacher features over all leading dims (and ranks)."""
        t = self._normalised(t)
        mean = t.reshape(-1, t.shape[-1]).mean(0)
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(mean)
            mean /= dist.get_world_size()
        return mean

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
