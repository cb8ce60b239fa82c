"""A memory-mapped store of decoded uint8 tiles, written once from the slides, and device batches from it.

``data.pipeline: device`` reads the tile fields once (slides are decoded by the plugin's readers, tile folders
by PIL) into ``<output_dir>/tile_store.npy`` (N, 3, S, S) uint8 plus a JSON description; a rerun on the same
data (:func:`store_identity`) reuses it, and a killed write leaves no store behind (written to a temporary name, then
renamed; the partial file is deleted on an exception, or by the next write after a SIGKILL). Training then
gathers batches of rows from the memory map (the page cache keeps them in RAM), moves them to the device and
makes the views there (:class:`~pathdistill_train.data.device_views.DeviceViewMaker`).
Each tile keeps the one field drawn at write time; the per-step randomness is in the views.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from napari_pathdistill.atomic import atomic_write_text
from napari_pathdistill.inference.disk_room import file_size_limit
from pathdistill_train.data.device_views import DeviceViewMaker
from pathdistill_train.data.samplers import InfiniteSampler
from pathdistill_train.data.sources import ConcatSource
from pathdistill_train.data.tile_listing import list_tiles, manifest_mpp
from pathdistill_train.errors import TrainDataError


def write_tile_store(
    source: ConcatSource,
    path: Path,
    describe: dict[str, Any],
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
    every_s: float = 30.0,
) -> Path:
    """Decode every tile of ``source`` once into ``path`` (.npy memmap) unless a matching store exists.

    Args:
        source: the tile source ((3, S, S) uint8 per index).
        path: the store file; ``<path>.json`` holds ``describe`` and the shape.
        describe: what identifies the source (slides, folders, field px, um/px): a mismatch rewrites the store.
        seed: base seed of the field drawn for each tile.
        progress: called with (tiles written, total) before the first tile, at most every ``every_s``
            seconds, and after the last (not called when the store is reused).
        every_s: seconds between progress calls.

    Returns:
        ``path``.
    """
    if store_matches(path, describe):
        return path
    remove_stale_partial_stores(path)
    first = source[(0, torch.Generator().manual_seed(seed))]
    shape = (len(source), *first.shape)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    check_room(path, int(np.prod(shape)))
    try:
        try:
            arr = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=shape)
        except OSError as e:
            raise TrainDataError(f"cannot write the tile store {path}: {e}; {_STORE_HINT}") from e
        last = time.monotonic()
        if progress is not None:
            progress(0, len(source))
        for i in range(len(source)):
            arr[i] = (first if i == 0 else source[(i, torch.Generator().manual_seed(seed + i))]).numpy()
            if progress is not None and (i == len(source) - 1 or time.monotonic() - last >= every_s):
                progress(i + 1, len(source))
                last = time.monotonic()
        arr.flush()
        del arr
        os.replace(tmp, path)
    except BaseException:  # Ctrl-C, an unreadable slide: no partial store of many GB left behind
        tmp.unlink(missing_ok=True)
        raise
    atomic_write_text(
        path.with_suffix(".json"), json.dumps({"describe": describe, "shape": list(shape)}, indent=1)
    )
    return path


_STORE_HINT = "set data.tile_store to a file on a disk with room, or use data.pipeline=loader"


def check_room(path: Path, nbytes: int) -> None:
    """Refuse a store of ``nbytes`` that the disk (or the file-size limit, ``ulimit -f``) cannot hold, before
    writing: the memory map is a sparse file, so a full disk would otherwise kill the process with SIGBUS
    part-way through (100k tiles of 280 px are 23.5 GB).

    Raises:
        TrainDataError: not enough room, naming the size needed and the room there.
    """
    free = shutil.disk_usage(path.parent).free
    limit = file_size_limit()
    if nbytes >= free or (limit is not None and nbytes >= limit):
        room = (
            f"{free / 1e9:.1f} GB free there" if nbytes >= free else f"the file-size limit is {limit:,} bytes"
        )
        size = f"{nbytes / 1e9:.1f} GB" if nbytes >= 1e8 else f"{nbytes / 1e6:.1f} MB"
        raise TrainDataError(f"the tile store {path} needs {size} and {room}: {_STORE_HINT}")


def store_identity(data_cfg: Any, px: int, seed: int) -> dict[str, Any]:
    """What a store of the ``data`` config node's sources at field side ``px`` is written from (its ``describe``).

    Every setting that changes the decoded fields (``tile_dirs_mpp``, ``mpp_override`` too), each slide by its
    absolute path, size and modification time, and each tile folder by its absolute path, number of tiles and the um/px of its ``pathdistill tiles``
    outputs:
    a tile added to or removed from a folder, or the same relative paths run from another folder, rewrite the
    store. Every rank computes it alike (a folder listing; no slide is opened).
    """

    def slide(path: str) -> dict[str, Any]:
        p = Path(path).expanduser().resolve()
        st = p.stat() if p.exists() else None
        return {"path": str(p), "bytes": st and st.st_size, "mtime_ns": st and st.st_mtime_ns}

    def folder(path: str) -> dict[str, Any]:
        p = Path(path).expanduser().resolve()
        tiles = list_tiles(p)[0]
        mpps = sorted({m for d in {t.parent for t in tiles} if (m := manifest_mpp(d)) is not None})
        return {"path": str(p), "tiles": len(tiles), "manifest_mpp": mpps}

    return {
        "slides": [slide(p) for p in data_cfg.slides or []],
        "tile_dirs": [folder(d) for d in data_cfg.tile_dirs or []],
        "px": px, "mpp": data_cfg.mpp, "min_tissue": data_cfg.min_tissue, "seed": seed,
        "tile_dirs_mpp": data_cfg.tile_dirs_mpp, "mpp_override": data_cfg.mpp_override,
        "small_tiles": "enlarged",  # stores written before 2026-12-07 padded them with white: rewritten
    }  # fmt: skip


def remove_stale_partial_stores(path: Path) -> list[Path]:
    """Delete the partial stores ``.<name>.<pid>.tmp`` beside ``path`` left by writers killed with SIGKILL
    (their process is gone from this host); a live writer's is kept. Returns the removed paths."""
    removed = []
    for tmp in path.parent.glob(f".{path.name}.*.tmp"):
        pid = tmp.name[len(path.name) + 2 : -4]
        if not pid.isdigit() or (int(pid) != os.getpid() and _alive(int(pid))):
            continue  # ours is not written yet: one with our pid is a dead process's
        tmp.unlink(missing_ok=True)
        removed.append(tmp)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def store_matches(path: Path, describe: dict[str, Any]) -> bool:
    """Whether ``path`` is a complete store of the sources ``describe`` names (its JSON is written last)."""
    try:
        return path.exists() and json.loads(path.with_suffix(".json").read_text()).get("describe") == describe
    except (OSError, ValueError):
        return False


def wait_for_tile_store(path: Path, describe: dict[str, Any], poll_s: float = 0.5) -> Path:
    """Wait until another rank has written the store of ``describe`` at ``path`` (on a shared file system).

    A file poll, not a collective: writing a store takes as long as decoding every tile (an hour for 100k
    tiles at 30 tiles/s), far past a process group's timeout (10 minutes on NCCL), and no collective may wait
    that long. The writer's ranks meet again at the first training step.
    """
    while not store_matches(path, describe):
        time.sleep(poll_s)
    return path


class DeviceBatches:
    """Infinite iterator of view batches made on ``device`` from a tile store, one batch gathered ahead.

    Yields the same dict as :func:`~pathdistill_train.data.loaders.collate_views`, already on the device.
    The views of stream position p depend only on (seed, p), not on the device or on a resume.
    """

    def __init__(self, store: Path, views: DeviceViewMaker, sampler: InfiniteSampler, batch_size: int,
                 device: torch.device, seed: int) -> None:  # fmt: skip
        self.tiles = np.load(store, mmap_mode="r")
        self.views, self.batch, self.device, self.seed = views, batch_size, device, seed
        self._items = iter(sampler)
        self._next: tuple[torch.Tensor, torch.Tensor] | None = None
        self._thread: threading.Thread | None = None
        self._prefetch()

    def _gather(self) -> None:
        items = [next(self._items) for _ in range(self.batch)]
        positions = torch.tensor([pos for pos, _ in items])
        tiles = torch.from_numpy(np.ascontiguousarray(self.tiles[[i for _, i in items]]))
        self._next = (tiles.pin_memory() if self.device.type == "cuda" else tiles, positions)

    def _prefetch(self) -> None:
        self._thread = threading.Thread(target=self._gather, daemon=True)
        self._thread.start()

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        return self

    def __next__(self) -> dict[str, torch.Tensor]:
        assert self._thread is not None
        self._thread.join()
        assert self._next is not None
        tiles, positions = self._next
        self._prefetch()
        gen = torch.Generator().manual_seed((self.seed * 1_000_003 + int(positions[0])) % (2**63))
        out = self.views(tiles.to(self.device, non_blocking=True), gen)
        out["position"] = positions.to(self.device)
        return out
