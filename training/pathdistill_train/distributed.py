"""torchrun environment: RANK / WORLD_SIZE / LOCAL_RANK, process group (nccl on GPU, gloo on CPU)."""

from __future__ import annotations

import os
import random
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from pathdistill_train.errors import TrainConfigError


@dataclass(frozen=True)
class DistEnv:
    """This process's place in the job."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def enable(backend: str = "auto", device: str = "auto") -> DistEnv:
    """Read the torchrun variables and initialise the process group when ``WORLD_SIZE > 1``.

    Args:
        backend: ``auto`` (nccl with CUDA, else gloo), ``nccl`` or ``gloo``.
        device: ``auto``, ``cuda`` or ``cpu``.

    Returns:
        The :class:`DistEnv` (rank 0 of 1 without torchrun).

    Raises:
        TrainConfigError: NCCL without CUDA, or a local rank without a CUDA device of its own.
    """
    rank = int(os.environ.get("RANK", 0))
    world = int(os.environ.get("WORLD_SIZE", 1))
    local = int(os.environ.get("LOCAL_RANK", 0))
    use_cuda = torch.cuda.is_available() if device == "auto" else device == "cuda"
    be = ("nccl" if use_cuda else "gloo") if backend == "auto" else backend
    _check(world, local, use_cuda, be)
    dev = torch.device(f"cuda:{local}" if use_cuda else "cpu")
    if use_cuda:
        torch.cuda.set_device(dev)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend=be, rank=rank, world_size=world)
    return DistEnv(rank, world, local, dev)


def _check(world: int, local: int, use_cuda: bool, backend: str) -> None:
    """Refuse, before any rendezvous, a job this machine cannot run (each rank says so in one line).

    Raises:
        TrainConfigError: NCCL without CUDA devices; more processes on this node than CUDA devices.
    """
    if world > 1 and backend == "nccl" and not use_cuda:
        where = "train.device=cpu" if torch.cuda.is_available() else "no CUDA device here"
        raise TrainConfigError(f"distributed.backend=nccl needs CUDA ({where}): use distributed.backend=gloo")
    n = torch.cuda.device_count() if use_cuda else 0
    if use_cuda and local >= n:
        raise TrainConfigError(
            f"LOCAL_RANK {local} has no CUDA device ({n} visible): start at most {n} processes per node "
            "(torchrun --nproc_per_node), or check CUDA_VISIBLE_DEVICES"
        )


def mean_over_ranks(values: dict[str, torch.Tensor]) -> dict[str, float]:
    """Scalar tensors averaged over ranks (one all-reduce; as they are without a process group).

    Each rank's losses are means over its own shard of the batch; with equal shards their mean over ranks is
    the loss of the global batch, what dinov2 logs.
    """
    names = list(values)
    stacked = torch.stack([values[k].detach().float().reshape(()) for k in names])
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(stacked)
        stacked /= dist.get_world_size()
    return dict(zip(names, stacked.tolist()))


def gather_batch(x: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """Every rank's ``x`` concatenated along ``dim`` (the batch), in rank order, with gradients flowing back to
    each rank's own part (``x`` itself without a process group).

    For the terms over a whole batch (CKA, relational, spread): every rank computes the global batch's value,
    and the backward of the gather sums the ranks' gradients of each part, so after DDP's average over ranks
    the gradient is that of one process holding the global batch.
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(x), dim=dim)


def seed_rank(seed: int, rank: int) -> None:
    """Give rank ``rank`` > 0 its own torch (CPU and CUDA), numpy and python RNG streams.

    Called after the model is built from ``torch.manual_seed(seed)`` on every rank (identical init: the EMA
    student, which DDP does not broadcast, starts equal everywhere). From there each rank must draw its own
    random parameters (the student-only augmentation draws from torch's global RNG), as dinov2 seeds each rank
    with ``seed + rank``: alike-seeded ranks would apply the same parameters to their different images. Rank 0
    keeps the stream it has, so a one-process run is unchanged; rank r > 0 is seeded from ``(seed, r)``
    (numpy's SeedSequence, so no rank of one seed shares a stream with a rank of a neighbouring seed).
    """
    if rank == 0:
        return
    words = np.random.SeedSequence([int(seed) % 2**63, rank]).generate_state(2, np.uint32)
    torch.manual_seed(int(words[0]) << 32 | int(words[1]))
    np.random.seed(int(words[0]))
    random.seed(int(words[1]))


def gather_to_main(obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order, on rank 0 (``[obj]`` without a process group; ``[]`` elsewhere).

    A collective: every rank must call it.
    """
    if not (dist.is_available() and dist.is_initialized()):
        return [obj]
    main = dist.get_rank() == 0
    out: list[Any] = [None] * dist.get_world_size() if main else []
    dist.gather_object(obj, out if main else None, dst=0)
    return out


def barrier() -> None:
    """Synchronise ranks (no-op without a process group)."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def cleanup() -> None:
    """Destroy the process group if one was created."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
