"""Benchmark: random 224 px tiles through the plugin's dask pyramid vs raw ``OpenSlide.read_region``.

Also measures opening a 100k x 100k sparse pyramidal TIFF (written here with tifffile): open time and peak RSS
increase; and, on the same random positions in one run, the readers side by side: raw OpenSlide, the plugin's
``Pyramid.read_region`` with its OpenSlide and (when ``fastslide`` is installed) fastslide backends, raw
fastslide, and napari-wsi's dask levels (when ``napari-wsi`` is installed; it is not a dependency). Run from the
repository root::

    python benchmarks/read_tiles.py [SLIDE] [--n 400] [--tile 224] [--level 0]

Targets: dask / raw tiles/s ratio >= 0.8; sparse open < 0.5 s and RSS increase < 100 MB.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from _data import CMU as DEFAULT_SLIDE
from _data import ROOT


def _positions(shape: tuple[int, int], tile: int, n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    h, w = shape
    return np.stack([rng.integers(0, w - tile, n), rng.integers(0, h - tile, n)], axis=1)


def bench_tiles(slide: Path, n: int, tile: int, level: int, scheduler: str) -> dict[str, float]:
    """tiles/s of dask slicing vs openslide-python read_region (+ convert RGB) on the same positions."""
    import openslide

    from napari_pathdistill.wsi import open_pyramid

    pyr = open_pyramid(slide)
    arr = pyr.to_dask()[level]
    ds = pyr.levels[level].downsample
    pos = _positions(pyr.levels[level].shape, tile, n)
    raw = openslide.OpenSlide(str(slide))
    results = {}
    for rnd in range(2):  # round 0 warms caches of both paths equally; round 1 is reported
        t0 = time.perf_counter()
        for x, y in pos:
            np.asarray(raw.read_region((round(x * ds), round(y * ds)), level, (tile, tile)).convert("RGB"))
        t_raw = time.perf_counter() - t0
        t0 = time.perf_counter()
        for x, y in pos:
            arr[y : y + tile, x : x + tile].compute(scheduler=scheduler)
        t_dask = time.perf_counter() - t0
        results = {
            "raw_tiles_s": n / t_raw,
            "dask_tiles_s": n / t_dask,
            "ratio": t_raw / t_dask,
            "round": rnd,
        }
    pyr.close()
    raw.close()
    return results


def _readers(slide: Path, level: int) -> dict[str, tuple[object, float]]:
    """name -> (read(x, y, tile) function in level pixels, level downsample) for every reader installed."""
    import importlib.util

    import openslide

    from napari_pathdistill.wsi import open_pyramid

    raw = openslide.OpenSlide(str(slide))
    ds = float(raw.level_downsamples[level])
    out: dict[str, tuple[object, float]] = {
        "raw OpenSlide.read_region": (
            lambda x, y, t: np.asarray(
                raw.read_region((round(x * ds), round(y * ds)), level, (t, t)).convert("RGB")
            ),
            ds,
        )
    }
    os.environ["PATHDISTILL_WSI_BACKEND"] = "openslide"
    pyr = open_pyramid(slide)
    out["plugin Pyramid (openslide)"] = (
        lambda x, y, t: pyr.read_region((round(x * ds), round(y * ds)), level, (t, t)),
        ds,
    )
    if importlib.util.find_spec("fastslide") is not None:
        import fastslide

        os.environ["PATHDISTILL_WSI_BACKEND"] = "fastslide"
        fpyr = open_pyramid(slide)
        out[f"plugin Pyramid ({fpyr.backend})"] = (
            lambda x, y, t: fpyr.read_region((round(x * ds), round(y * ds)), level, (t, t)),
            ds,
        )
        fs = fastslide.FastSlide.from_file_path(str(slide), cache=None)
        out["raw fastslide.read_region"] = (
            lambda x, y, t: fs.read_region((int(x), int(y)), level, (t, t)).numpy(),
            ds,
        )
    os.environ.pop("PATHDISTILL_WSI_BACKEND", None)
    if importlib.util.find_spec("napari_wsi") is not None:
        from napari_wsi.backends.openslide import OpenSlideStore

        wsi_level = OpenSlideStore(slide).to_layer_data_tuples()[0][0][level]
        out["napari-wsi dask level"] = (lambda x, y, t: wsi_level[y : y + t, x : x + t].compute(), ds)
    return out


def bench_readers(slide: Path, n: int, tile: int, level: int) -> list[tuple[str, float]]:
    """(reader, tiles/s) on the same random positions, readers interleaved per round; round 1 is reported."""
    import openslide

    w, h = openslide.OpenSlide(str(slide)).level_dimensions[level]
    pos = _positions((h, w), tile, n, seed=1)
    readers = _readers(slide, level)
    rates: dict[str, float] = {}
    for _round in range(2):  # round 0 warms file caches for every reader alike
        for name, (read, _ds) in readers.items():
            t0 = time.perf_counter()
            for x, y in pos:
                read(int(x), int(y), tile)
            rates[name] = n / (time.perf_counter() - t0)
    return list(rates.items())


def bench_sparse(side: int = 100_000) -> dict[str, float]:
    """Open time and peak-RSS increase for a side x side sparse pyramidal TIFF."""
    sys.path.insert(0, str(ROOT / "tests"))  # tests/_wsi_files.py
    from _wsi_files import write_sparse_tiff
    from napari_pathdistill.wsi import open_pyramid

    with tempfile.TemporaryDirectory() as tmp:
        path = write_sparse_tiff(Path(tmp) / "sparse.tif", side=side)
        rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        t0 = time.perf_counter()
        pyr = open_pyramid(path)
        levels = pyr.to_dask()
        t_open = time.perf_counter() - t0
        rss_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) / 1024
        t0 = time.perf_counter()
        levels[0][50_000:50_224, 50_000:50_224].compute()
        t_read = time.perf_counter() - t0
        pyr.close()
    return {"open_s": t_open, "rss_increase_mb": rss_mb, "read_one_tile_s": t_read, "size_mb": 0.0}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("slide", nargs="?", type=Path, default=DEFAULT_SLIDE)
    p.add_argument("--n", type=int, default=400)
    p.add_argument("--tile", type=int, default=224)
    p.add_argument("--level", type=int, default=0)
    p.add_argument("--cache-mb", type=float, default=None, help="PATHDISTILL_CHUNK_CACHE_MB (default: 128)")
    p.add_argument(
        "--scheduler", default="synchronous", help="dask scheduler for each tile (synchronous|threads)"
    )
    args = p.parse_args()
    if args.cache_mb is not None:
        os.environ["PATHDISTILL_CHUNK_CACHE_MB"] = str(args.cache_mb)
    # import everything first so the RSS measurement below sees only the open itself
    import dask.array  # noqa: F401
    import openslide  # noqa: F401
    import tifffile  # noqa: F401

    sparse = bench_sparse()
    print(f"sparse 100k x 100k TIFF: open {sparse['open_s'] * 1000:.1f} ms, peak RSS +{sparse['rss_increase_mb']:.1f} MB, "
          f"one 224 px read {sparse['read_one_tile_s'] * 1000:.1f} ms  (targets < 500 ms, < 100 MB)")  # fmt: skip
    res = bench_tiles(args.slide, args.n, args.tile, args.level, args.scheduler)
    cache = os.environ.get("PATHDISTILL_CHUNK_CACHE_MB", "128")
    print(f"{args.slide.name} level {args.level}, {args.n} random {args.tile} px tiles, "
          f"dask scheduler={args.scheduler}, chunk cache {cache} MB:")  # fmt: skip
    print(f"  raw OpenSlide.read_region: {res['raw_tiles_s']:.1f} tiles/s")
    print(f"  plugin dask pyramid:       {res['dask_tiles_s']:.1f} tiles/s")
    print(f"  ratio dask/raw = {res['ratio']:.2f}  (target >= 0.8)")
    rows = bench_readers(args.slide, args.n, args.tile, args.level)
    base = rows[0][1]
    print(
        f"readers on the same {args.n} random {args.tile} px tiles (2nd round, each reader's own caches warm):"
    )
    for name, rate in rows:
        print(f"  {name:30s} {rate:8.1f} tiles/s   x{rate / base:.2f} of raw OpenSlide")
    print(f"load average: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
