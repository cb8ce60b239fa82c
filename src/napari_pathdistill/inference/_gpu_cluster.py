"""A LocalCluster with one worker process per GPU, each pinned to its GPU through ``CUDA_VISIBLE_DEVICES``.

The same scheme as dask-cuda's ``LocalCUDACluster``, without the dependency: the Nanny of each worker sets
``CUDA_VISIBLE_DEVICES`` in the worker process before CUDA is initialised there, so ``cuda`` (device 0) in
that process is its own GPU. Every worker advertises ``resources={"GPU": 1}`` and has one thread.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

from distributed import LocalCluster


class PinnedGPUCluster(LocalCluster):
    """LocalCluster of ``len(gpus)`` worker processes, worker ``gpu-<id>`` seeing only GPU ``<id>``.

    Args:
        gpus: CUDA device indices or UUIDs, as in ``CUDA_VISIBLE_DEVICES``.
        **kwargs: passed to :class:`distributed.LocalCluster` (``n_workers``, ``threads_per_worker``,
            ``processes`` and ``resources`` are fixed).
    """

    def __init__(self, gpus: Sequence[str], **kwargs) -> None:
        if not gpus:
            raise ValueError("PinnedGPUCluster needs at least one GPU id")
        self.gpus = [str(g) for g in gpus]
        kwargs.setdefault("dashboard_address", None)
        super().__init__(n_workers=0, threads_per_worker=1, processes=True, resources={"GPU": 1}, **kwargs)
        self.scale(len(self.gpus))

    def new_worker_spec(self) -> dict:
        """Spec of the next worker: the first GPU without a worker, exported as ``CUDA_VISIBLE_DEVICES``."""
        free = [g for g in self.gpus if f"gpu-{g}" not in self.worker_spec]
        if not free:
            raise ValueError(f"every GPU ({', '.join(self.gpus)}) already has a worker; GPUs are not shared")
        spec = copy.deepcopy(self.new_spec)
        spec["options"]["env"] = {**spec["options"].get("env", {}), "CUDA_VISIBLE_DEVICES": free[0]}
        return {f"gpu-{free[0]}": spec}
