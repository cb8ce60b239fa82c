"""Teacher centering shared by the DINO and iBOT losses: EMA centre or Sinkhorn-Knopp (dinov2 behaviour)."""

from __future__ import annotations

import torch
import torch.distributed as dist


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
