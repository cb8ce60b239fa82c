"""Dataset, collate and DataLoader of the distillation trainer."""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pathdistill_train.data.augmentations import DataAugmentationDistill
from pathdistill_train.data.samplers import InfiniteSampler
from pathdistill_train.data.sources import ConcatSource, TileFolderSource, WSISource
from pathdistill_train.errors import TrainConfigError
from pathdistill_train.train.metric_logger import format_duration
from pathdistill_train.train.preemption import ignore_sigterm


class DistillDataset(torch.utils.data.Dataset):
    """Views of tiles; item ``(position, index)`` is augmented with an RNG seeded by ``(seed, position)``.

    Seeding per stream position makes the data independent of the number of workers and lets a resumed
    run draw exactly the views the killed run would have drawn.

    Args:
        source: a tile source returning (3, S, S) uint8 fields.
        augment: the view maker.
        seed: base seed.
    """

    def __init__(self, source: ConcatSource, augment: DataAugmentationDistill, seed: int) -> None:
        self.source, self.augment, self.seed = source, augment, seed

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, item: tuple[int, int]) -> dict[str, torch.Tensor]:
        pos, index = item
        sample_seed = (self.seed * 1_000_003 + pos) % (2**63)
        gen = torch.Generator().manual_seed(sample_seed)
        tile = self.source[(index, gen)]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(sample_seed + 1)
            views = self.augment(tile)
        views["position"] = torch.tensor(pos)
        return views


def collate_views(batch: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Stack per-sample views view-major.

    Returns:
        ``{"global": (2, B, 3, G, G), "local": (L, B, 3, l, l), "position": (B,)}``.
    """
    return {
        "global": torch.stack([b["global"] for b in batch], dim=1),
        "local": torch.stack([b["local"] for b in batch], dim=1),
        "position": torch.stack([b["position"] for b in batch]),
    }


def _worker_init(worker_id: int) -> None:
    """Seed numpy/python in each worker from torch's per-worker seed (base_seed + worker_id); leave SIGTERM to
    the training process (:func:`~pathdistill_train.train.preemption.ignore_sigterm`)."""
    ignore_sigterm()
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def build_source(
    data_cfg: Any, source_px: int, progress: Callable[[int, int], None] | None = None
) -> ConcatSource:
    """Tile source of the ``data`` config node: WSIs (``slides``) and tile folders (``tile_dirs``).

    ``progress`` is called with (slides whose tissue grid is made, slides) while the grids are made (see
    :class:`WSISource`).
    """
    sources: list[Any] = []
    if data_cfg.slides:
        cfg = data_cfg
        sources.append(WSISource(cfg.slides, source_px, cfg.mpp, cfg.min_tissue, cfg.mpp_override, progress))
    for d in data_cfg.tile_dirs or []:
        sources.append(TileFolderSource(Path(d), source_px, data_cfg.tile_dirs_mpp, data_cfg.mpp))
    return ConcatSource(sources)


def _summarise(source: ConcatSource, summary: list[dict[str, Any]], rank: int) -> None:
    """Extend ``summary`` with each slide / tile folder and its tile count; rank 0 prints one line each."""
    entries = source.describe()
    summary.extend(entries)
    for e in entries if rank == 0 else []:
        what = f"slide {e['slide']}" if "slide" in e else f"tile folder {e['tile_dir']}"
        notes = "; ".join(f"{k.replace('_', ' ')} {e[k]}" for k in ("left_out", "rescaled") if e.get(k))
        print(
            f"[pathdistill-train] data: {what}: {e['tiles']} tiles" + f" ({notes})" * bool(notes), flush=True
        )


def build_loader(
    cfg: Any, rank: int, world_size: int, start: int, summary: list[dict[str, Any]] | None = None
) -> torch.utils.data.DataLoader:
    """DataLoader over an :class:`InfiniteSampler` starting at this rank's ``start``-th sample.

    ``summary``, when given, is extended with each slide / tile folder and its tile count.
    """
    factor = cfg.crossmag.factor if cfg.crossmag.enabled else 1
    global_size = cfg.crops.global_size * factor
    progress = _rate_progress("tissue grids", "slides") if rank == 0 else None
    source = build_source(cfg.data, round(global_size * cfg.data.source_scale), progress)
    if summary is not None:
        _summarise(source, summary, rank)
    dataset = DistillDataset(source, DataAugmentationDistill(cfg.augmentation, global_size), cfg.train.seed)
    sampler = InfiniteSampler(
        len(dataset), cfg.train.seed, rank, world_size, start * cfg.train.batch_size_per_gpu
    )
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=cfg.train.batch_size_per_gpu,
        sampler=sampler,
        num_workers=cfg.train.num_workers,
        collate_fn=collate_views,
        worker_init_fn=_worker_init,
        pin_memory=torch.cuda.is_available(),
        drop_last=True,
        persistent_workers=cfg.train.num_workers > 0,
    )


def _rate_progress(what: str, unit: str) -> Callable[[int, int], None]:
    """Progress lines ``[pathdistill-train] WHAT: done/total UNIT (rate, ETA)`` of a long preparation: a
    tile-store write (decoding every tile once takes an hour for 100k tiles), the tissue grids of many slides."""
    t0 = time.monotonic()

    def report(done: int, total: int) -> None:
        elapsed = time.monotonic() - t0
        rate = done / elapsed if elapsed > 0 else 0.0
        eta = f", ETA {format_duration((total - done) / rate)}" if 0 < done < total and rate > 0 else ""
        print(f"[pathdistill-train] {what}: {done}/{total} {unit} ({rate:.{1 if 0 < rate < 10 else 0}f} {unit}/s{eta})",
              flush=True)  # fmt: skip

    return report


def build_batches(
    cfg: Any,
    rank: int,
    world_size: int,
    start: int,
    device: torch.device,
    summary: list[dict[str, Any]] | None = None,
) -> Iterator[dict]:
    """Training batches of ``data.pipeline``: the DataLoader, or views made on ``device`` from a tile store.

    The device pipeline writes the store on rank 0 (once; reused while the sources match); the other ranks wait
    for its file (no collective: see :func:`~pathdistill_train.data.tile_store.wait_for_tile_store`).
    ``summary``, when given, is extended with each slide / tile folder and its tile count (rank 0 of the device
    pipeline).
    """
    if cfg.data.pipeline == "loader":
        return iter(build_loader(cfg, rank, world_size, start, summary))
    if cfg.data.pipeline != "device":
        raise TrainConfigError(f"data.pipeline must be loader or device, got {cfg.data.pipeline!r}")
    from pathdistill_train.data.device_views import DeviceViewMaker
    from pathdistill_train.data.tile_store import (
        DeviceBatches,
        store_identity,
        wait_for_tile_store,
        write_tile_store,
    )

    factor = cfg.crossmag.factor if cfg.crossmag.enabled else 1
    global_size = cfg.crops.global_size * factor
    source_px = round(global_size * cfg.data.source_scale)
    store = Path(cfg.data.tile_store or Path(cfg.output_dir) / "tile_store.npy")
    describe = store_identity(cfg.data, source_px, cfg.train.seed)
    if rank == 0:
        store.parent.mkdir(parents=True, exist_ok=True)
        source = build_source(cfg.data, source_px, _rate_progress("tissue grids", "slides"))
        if summary is not None:
            _summarise(source, summary, rank)
        progress = _rate_progress(f"tile store {store}", "tiles")
        write_tile_store(source, store, describe, cfg.train.seed, progress=progress)
    else:  # not a barrier: rank 0 may decode tiles for longer than any collective waits
        wait_for_tile_store(store, describe)
    n = len(np.load(store, mmap_mode="r"))
    sampler = InfiniteSampler(n, cfg.train.seed, rank, world_size, start * cfg.train.batch_size_per_gpu)
    views = DeviceViewMaker(cfg.augmentation, global_size)
    return DeviceBatches(store, views, sampler, cfg.train.batch_size_per_gpu, device, cfg.train.seed)
