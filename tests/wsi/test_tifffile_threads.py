"""The tifffile backend is thread-safe by construction: many threads reading random tiles of the real OS-2 NDPI
OME-TIFF (JPEG, JFIF) get exactly the single-thread pixels, even with a delay injected into the file handle's
``seek`` (which turned tifffile's lazy ``is_jfif`` / JPEG-table reads, made outside the lock, into wrong colours
or "Not a JPEG file")."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import tifffile

from napari_pathdistill.wsi.pyramid import open_pyramid

THREADS, READS_PER_THREAD = 16, 6


@pytest.fixture(scope="module")
def ndpi_ome(os2_pair: tuple[Path, Path]) -> Path:
    return os2_pair[0]


def _tile_positions(pyr, n: int, seed: int) -> list[tuple[int, int]]:
    th, tw = pyr.levels[0].tile_shape
    h, w = pyr.levels[0].shape
    rng = np.random.default_rng(seed)
    return [
        (int(rng.integers(0, -(-w // tw))) * tw, int(rng.integers(0, -(-h // th))) * th) for _ in range(n)
    ]


def _single_thread_tiles(path: Path, positions) -> dict[tuple[int, int], np.ndarray]:
    with open_pyramid(path) as pyr:
        th, tw = pyr.levels[0].tile_shape
        return {p: pyr.read_region(p, 0, (tw, th)) for p in set(positions)}


def _stress(path: Path, positions) -> dict[tuple[int, int], list[np.ndarray]]:
    """Open ``path`` and read ``positions`` from THREADS threads at once (all start together)."""
    with open_pyramid(path) as pyr:
        th, tw = pyr.levels[0].tile_shape
        barrier = threading.Barrier(THREADS)
        chunks = [positions[i::THREADS] for i in range(THREADS)]

        def work(mine):
            barrier.wait()
            return [(p, pyr.read_region(p, 0, (tw, th))) for p in mine]

        with ThreadPoolExecutor(THREADS) as pool:
            results = [r for rs in pool.map(work, chunks) for r in rs]
    got: dict[tuple[int, int], list[np.ndarray]] = {}
    for p, tile in results:
        got.setdefault(p, []).append(tile)
    return got


def _assert_equal_to_single_thread(path: Path, seed: int) -> None:
    with open_pyramid(path) as pyr:
        positions = _tile_positions(pyr, THREADS * READS_PER_THREAD, seed)
    reference = _single_thread_tiles(path, positions)
    got = _stress(path, positions)
    assert sum(map(len, got.values())) == len(positions)
    for p, tiles in got.items():
        for tile in tiles:
            np.testing.assert_array_equal(tile, reference[p], err_msg=f"tile at {p}")


def test_reference_tiles_are_rgb_not_raw_ycbcr(ndpi_ome: Path) -> None:
    """Guard: the reference really is decoded colour (the failure mode is YCbCr shown as RGB)."""
    with open_pyramid(ndpi_ome) as pyr, tifffile.TiffFile(ndpi_ome) as tif:
        np.testing.assert_array_equal(
            pyr.read_region((0, 0), 0, (512, 512)), tif.pages[0].asarray()[:512, :512]
        )


def test_many_threads_equal_single_thread(ndpi_ome: Path) -> None:
    for seed in range(3):
        _assert_equal_to_single_thread(ndpi_ome, seed)


def test_many_threads_with_a_slow_seek(ndpi_ome: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The real tifffile FileHandle, 2 ms between a ``seek`` and the read after it: the window in which another
    thread's seek interleaves becomes wide enough to hit on every run if any read happens outside the lock
    (it did with tifffile's lazy ``is_jfif`` check, made outside the backend's lock)."""
    seek = tifffile.FileHandle.seek

    def slow_seek(self, offset: int, whence: int = 0) -> int:
        pos = seek(self, offset, whence)
        time.sleep(0.002)  # between this seek and the read that follows it
        return pos

    monkeypatch.setattr(tifffile.FileHandle, "seek", slow_seek)
    _assert_equal_to_single_thread(ndpi_ome, seed=7)
