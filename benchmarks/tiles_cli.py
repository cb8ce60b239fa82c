"""Benchmark: ``pathdistill tiles`` at slide scale: its preview drawn per tile (before) vs for all tiles at once
(now), side by side in one run, and optionally the whole command on a big slide (wall time, peak RSS).

Preview: a 2048 x 2048 thumbnail and a square grid of ``--tiles`` tiles of 6 thumbnail px (78,128 tiles of 224 px
at 0.25 um/px on a 100k x 100k px slide are 4.6 px); "before" is the former loop of one
``skimage.draw.rectangle_perimeter`` per tile, timed on ``--before-tiles`` of them and scaled per tile.
``--slide PATH`` also runs the command on it in a child process (e.g. ``_big_slide.py`` at 100,000 x 100,000 px)::

    python benchmarks/tiles_cli.py [--tiles 100000] [--before-tiles 5000] [--slide big.tif --mpp 0.25]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

_CHILD = (
    "import re, sys, time\n"
    "from napari_pathdistill.cli.main import main\n"
    "t0 = time.perf_counter(); rc = main(sys.argv[1:]); dt = time.perf_counter() - t0\n"
    "hwm = re.search(r'VmHWM:\\s+(\\d+) kB', open('/proc/self/status').read()).group(1)\n"
    "print('RESULT', rc, dt, hwm)\n"
)


def before(thumb: np.ndarray, coords: np.ndarray, size_level0: float, ds: float) -> np.ndarray:
    """The former outline loop (one skimage call per tile)."""
    from skimage.draw import rectangle_perimeter

    out = thumb.copy()
    side = size_level0 / ds
    for x, y in coords:
        rr, cc = rectangle_perimeter((y / ds, x / ds), extent=(side, side), shape=out.shape[:2])
        out[rr, cc] = (255, 220, 0)
    return out


def preview_times(n_tiles: int, n_before: int) -> tuple[float, float]:
    """(seconds per tile before, seconds per tile now) on a synthetic thumbnail."""
    from napari_pathdistill.cli._preview import preview

    rng = np.random.default_rng(0)
    thumb = rng.integers(150, 250, (2048, 2048, 3), dtype=np.uint8)
    mask = np.ones((2048, 2048), bool)
    side = int(np.ceil(np.sqrt(n_tiles)))
    r, c = np.divmod(np.arange(n_tiles), side)
    ds, size = 10.0, 60.0  # 6 thumbnail px per tile
    coords = np.stack([c * size, r * size], axis=1).astype(np.int64)
    t0 = time.perf_counter()
    before(thumb, coords[:n_before], size, ds)
    t1 = time.perf_counter()
    preview(thumb, mask, coords, size, ds)
    t2 = time.perf_counter()
    return (t1 - t0) / n_before, (t2 - t1) / n_tiles


def run_command(slide: str, extra: list[str]) -> tuple[int, float, float, int]:
    """(exit code, seconds, peak RSS in MB, tiles) of ``pathdistill tiles SLIDE`` in a child process."""
    with tempfile.TemporaryDirectory() as out:
        args = [sys.executable, "-c", _CHILD, "tiles", slide, "--out", out, *extra]
        proc = subprocess.run(args, capture_output=True, text=True, timeout=3600)
        line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT")][-1].split()
        n = Path(out, "tiles.csv").read_text().count("\n") - 1 if line[1] == "0" else 0
    return int(line[1]), float(line[2]), int(line[3]) / 1024, n


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tiles", type=int, default=100_000)
    p.add_argument("--before-tiles", type=int, default=5_000)
    p.add_argument("--slide", default=None)
    p.add_argument("--mpp", default="0.5")
    p.add_argument("--tile-px", default="224")
    a = p.parse_args(argv)
    load = os.getloadavg()
    per_before, per_now = preview_times(a.tiles, a.before_tiles)
    print(f"preview per tile: before {1e6 * per_before:.1f} us, now {1e6 * per_now:.2f} us "
          f"(x{per_before / per_now:.0f}); at {a.tiles:,} tiles: before ~{per_before * a.tiles:.1f} s, "
          f"now {per_now * a.tiles:.2f} s")  # fmt: skip
    if a.slide:
        rc, dt, mb, n = run_command(a.slide, ["--mpp", a.mpp, "--tile-px", a.tile_px])
        print(f"pathdistill tiles {os.path.basename(a.slide)}: exit {rc}, {n:,} tiles, {dt:.1f} s "
              f"({1e6 * dt / max(n, 1):.0f} us per tile), peak RSS {mb:.0f} MB")  # fmt: skip
    print(f"load average before {load}, after {os.getloadavg()}; {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
