"""Relational distillation of the exported CLS tokens: the teacher's neighbourhoods in a batch, across views.

The feature loss matches each student token to its teacher's through an adaptor, which leaves the geometry of the
exported tokens free: a constant component (all tiles nearly parallel, pairwise cosine ~0.99) costs it nothing,
and cosine retrieval then sees little else. This loss acts on that geometry directly, as SEED (Fang et al. 2021)
and similarity-preserving distillation (Tung & Mori 2019) do: for each image b of a batch, the softmax of the
teacher's cosines between its view i of b and its view i of every image of the batch is the target of the
softmax of the student's cosines between its view j of b and its own view i of every image. With cross pairing
(j != i, H0-mini eq. 1) the student's stain/scanner-changed view must find the same tile, and the same
neighbours, that the teacher finds on the clean view: retrieval across stains and scanners is trained for, with
the teacher's notion of which tiles are alike.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class RelationalDistillLoss(nn.Module):
    """KL divergence between teacher and student similarity distributions over a batch.

    Args:
        teacher_temp: temperature of the teacher's cosines.
        student_temp: temperature of the student's cosines (equal temperatures: the loss is 0 when the student's
            cross-view cosines equal the teacher's same-view cosines up to a constant per row).
    """

    def __init__(self, teacher_temp: float = 0.1, student_temp: float = 0.1) -> None:
        super().__init__()
        if teacher_temp <= 0 or student_temp <= 0:
            raise ValueError(f"temperatures must be > 0, got {teacher_temp}, {student_temp}")
        self.teacher_temp, self.student_temp = teacher_temp, student_temp

    def teacher_probs(self, teacher: torch.Tensor) -> torch.Tensor:
        """(B, Dt) teacher features of one view -> (B, B) rows of neighbour probabilities (self included)."""
        t = F.normalize(teacher.detach().float(), dim=-1)
        return torch.softmax(t @ t.T / self.teacher_temp, dim=-1)

    def forward(
        self, student_query: torch.Tensor, student_keys: torch.Tensor, teacher: torch.Tensor
    ) -> torch.Tensor:
        """Mean over the batch of KL(teacher row || student row).

        Args:
            student_query: (B, Ds) student CLS tokens of view j (the exported embedding, not adapted).
            student_keys: (B, Ds) student CLS tokens of view i, row-aligned with ``student_query``.
            teacher: (B, Dt) teacher features of view i (e.g. normalised, centred targets), row-aligned.

        Returns:
            Scalar loss (0 when the distributions match).
        """
        if not (len(student_query) == len(student_keys) == len(teacher)):
            raise ValueError("student queries, student keys and teacher features must have the same rows")
        p = self.teacher_probs(teacher)
        q = F.normalize(student_query.float(), dim=-1)
        k = F.normalize(student_keys.float(), dim=-1)
        log_s = torch.log_softmax(q @ k.T / self.student_temp, dim=-1)
        return (p * (torch.log(p.clamp_min(1e-12)) - log_s)).sum(-1).mean()
