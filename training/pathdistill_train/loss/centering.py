"""Teacher centering shared by the DINO and iBOT losses: EMA centre or Sinkhorn-Knopp (dinov2 behaviour), and
the :class:`CenteredTeacherLoss` base both losses build on."""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn


def _all_reduce_sum(x: torch.Tensor) -> torch.Tensor:
    """Sum ``x`` over ranks in place when a process group is initialised."""
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(x)
    return x


def world_size() -> int:
    """Number of ranks (1 without a process group)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


@torch.no_grad()
def sinkhorn_knopp(teacher_logits: torch.Tensor, teacher_temp: float, n_iterations: int = 3) -> torch.Tensor:
    """Sinkhorn-Knopp normalisation of teacher scores (dinov2 ``sinkhorn_knopp_teacher``).

    Args:
        teacher_logits: (M, K) prototype scores of M samples (local to this rank).
        teacher_temp: teacher temperature.
        n_iterations: number of row/column normalisations.

    Returns:
        (M, K) teacher probabilities, each row summing to 1.
    """
    q = torch.exp(teacher_logits.float() / teacher_temp).t()  # (K, M)
    m_total = torch.tensor(q.shape[1] * world_size(), device=q.device, dtype=torch.float32)
    k = q.shape[0]
    q /= _all_reduce_sum(torch.sum(q))
    for _ in range(n_iterations):
        q /= _all_reduce_sum(torch.sum(q, dim=1, keepdim=True))
        q /= k
        q /= torch.sum(q, dim=0, keepdim=True)
        q /= m_total
    q *= m_total
    return q.t()


class CenteredTeacherLoss(nn.Module):
    """Shared part of the DINO and iBOT losses: the teacher's centre (EMA or Sinkhorn-Knopp) and temperatures.

    Subclasses define ``forward(student_logits, teacher_probs)``; scores are (..., K) with K prototypes last.

    Args:
        center_shape: shape of the EMA centre buffer, broadcast over the teacher scores, e.g. (1, K) or (1, 1, K).
        student_temp: student temperature (0.1 in the paper).
        center_momentum: EMA momentum of the centre.
        centering: ``"centering"`` or ``"sinkhorn_knopp"``.
    """

    def __init__(
        self, center_shape: tuple[int, ...], student_temp: float, center_momentum: float, centering: str
    ) -> None:
        super().__init__()
        if centering not in ("centering", "sinkhorn_knopp"):
            raise ValueError(f"centering must be 'centering' or 'sinkhorn_knopp', got {centering!r}")
        self.center: torch.Tensor
        self.student_temp = student_temp
        self.center_momentum = center_momentum
        self.centering = centering
        self.register_buffer("center", torch.zeros(center_shape))

    def teacher_probs(self, teacher_logits: torch.Tensor, teacher_temp: float) -> torch.Tensor:
        """Centre and sharpen teacher scores.

        Args:
            teacher_logits: (..., K) prototype scores, e.g. (V, B, K) CLS or (B, N, K) patch scores.
            teacher_temp: teacher temperature at this step.

        Returns:
            (..., K) probabilities.
        """
        if self.centering == "sinkhorn_knopp":
            flat = teacher_logits.reshape(-1, teacher_logits.shape[-1])
            return sinkhorn_knopp(flat, teacher_temp).reshape(teacher_logits.shape)
        return F.softmax((teacher_logits.float() - self.center) / teacher_temp, dim=-1)

    @torch.no_grad()
    def update_center(self, teacher_logits: torch.Tensor) -> None:
        """EMA update of the centre with the mean teacher score over every sample (and patch) of all ranks.

        Args:
            teacher_logits: (..., K) raw teacher scores.
        """
        flat = teacher_logits.float().reshape(-1, teacher_logits.shape[-1])
        batch_center = _all_reduce_sum(flat.sum(dim=0)) / (flat.shape[0] * world_size())
        self.center.mul_(self.center_momentum).add_(
            batch_center.view(self.center.shape), alpha=1 - self.center_momentum
        )
