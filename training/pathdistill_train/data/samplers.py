"""Infinite, DistributedSampler-aware sampler with an exact resumable position."""

from __future__ import annotations

from collections.abc import Iterator

import torch


class InfiniteSampler(torch.utils.data.Sampler):
    """Endless stream of ``(global_position, dataset_index)`` pairs split across ranks.

    The global stream is the concatenation of per-epoch permutations of ``range(size)`` seeded by
    ``seed + epoch``; rank ``r`` of ``W`` takes global positions ``r, r + W, r + 2W, ...`` starting at its
    ``start``-th item, so resuming with ``start = samples already consumed by this rank`` continues exactly.

    Args:
        size: dataset length.
        seed: base seed.
        rank: this rank.
        world_size: number of ranks.
        start: number of items this rank already consumed.
    """

    def __init__(self, size: int, seed: int = 0, rank: int = 0, world_size: int = 1, start: int = 0) -> None:
        self.size, self.seed, self.rank, self.world_size, self.start = size, seed, rank, world_size, start
        self._perms: dict[int, torch.Tensor] = {}

    def _perm(self, epoch: int) -> torch.Tensor:
        if epoch not in self._perms:
            self._perms = {
                epoch: torch.randperm(self.size, generator=torch.Generator().manual_seed(self.seed + epoch))
            }
        return self._perms[epoch]

    def __iter__(self) -> Iterator[tuple[int, int]]:
        j = self.start
        while True:
            pos = self.rank + self.world_size * j
            yield pos, int(self._perm(pos // self.size)[pos % self.size])
            j += 1
