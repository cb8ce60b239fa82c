"""Benchmark: attention over 1,000 tiles of a large generated slide in bounded memory, and its speed.

The slide is generated (a few seconds): a side x side tiled JPEG pyramid (SubIFDs, 0.5 um/px) whose pixels are the
real CMU-1-Small-Region H&E repeated periodically, so tissue detection keeps most tiles. The measured part runs in
a child process (so nothing else's memory counts): models loaded, the peak RSS reset (``/proc/self/clear_refs``),
then ``iter_attention_pair`` streams ``--tiles`` overlapping tiles; the child reports its RSS before, after the
first batch and its peak, and the tiles/s. The load average is printed before and after (a shared machine's other
work slows the run; the memory does not depend on it). Run from the repository root::

    python benchmarks/attention_memory.py [--side 30000] [--tiles 1000] [--teacher efficientnet-lite2-imagenet]
        [--student pathdistill-student] [--batch-size 8] [--out /tmp/attention_memory]

Target (issue "Teacher vs student attention"): peak RSS increase < 500 MB whatever the tile count.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from _data import CMU

TILE = 512


def _status_kb(key: str) -> int:
    return int(re.search(rf"{key}:\s+(\d+) kB", Path("/proc/self/status").read_text()).group(1))  # type: ignore[union-attr]


def _periodic_tiles(src: np.ndarray, shape: tuple[int, int]) -> Iterator[np.ndarray]:
    """TILE x TILE tiles (row-major) of a shape-sized image that repeats ``src`` periodically."""
    h, w = src.shape[:2]
    for y in range(0, shape[0], TILE):
        for x in range(0, shape[1], TILE):
            rows, cols = np.arange(y, y + TILE) % h, np.arange(x, x + TILE) % w
            yield src[rows][:, cols]


def write_generated_slide(path: Path, side: int, mpp: float = 0.5) -> Path:
    """A side x side JPEG pyramid (levels /1, /4, /16, ... while >= 1024 px) of the CMU H&E repeated."""
    import openslide
    import tifffile
    from skimage.transform import resize

    with openslide.OpenSlide(str(CMU)) as s:
        src = np.asarray(s.read_region((0, 0), 0, s.dimensions).convert("RGB"))
    kw = {"tile": (TILE, TILE), "compression": "jpeg", "photometric": "rgb", "dtype": np.uint8}
    factors = [4**k for k in range(1, 6) if side // 4**k >= 1024]
    tmp = path.with_suffix(".partial.tif")
    with tifffile.TiffWriter(tmp, bigtiff=True) as tw:
        res = {"resolution": (1e4 / mpp, 1e4 / mpp), "resolutionunit": "CENTIMETER"}
        tw.write(_periodic_tiles(src, (side, side)), shape=(side, side, 3), subifds=len(factors), **res, **kw)
        for f in factors:
            small = resize(
                src, (src.shape[0] // f, src.shape[1] // f), anti_aliasing=True, preserve_range=True
            )
            shape = (side // f, side // f)
            tw.write(_periodic_tiles(small.astype(np.uint8), shape), shape=(*shape, 3), subfiletype=1, **kw)
    tmp.replace(path)
    return path


def _models(args: argparse.Namespace) -> tuple:
    from napari_pathdistill.models import load_model
    from napari_pathdistill.models.testing import tiny_model

    if args.tiny:
        return tiny_model("cnn", tile_px=args.tile_px), tiny_model("vit", tile_px=args.tile_px)
    return load_model(args.teacher, device=args.device), load_model(args.student, device=args.device)


def child(args: argparse.Namespace) -> dict:
    """The measured run (in its own process): models, peak reset, stream, RSS and tiles/s."""
    from napari_pathdistill.inference.attention_pairs import AttentionPair, iter_attention_pair
    from napari_pathdistill.progress import Progress

    teacher, student = _models(args)
    before = _status_kb("VmRSS")
    try:
        Path("/proc/self/clear_refs").write_text("5")  # peak RSS := current RSS
        reset = True
    except OSError:
        reset = False
    t0, first, stream_max, pair = time.perf_counter(), None, 0, None
    for item in iter_attention_pair(teacher, student, args.slide, max_tiles=args.tiles, batch_size=args.batch_size,
                                    overlap=args.overlap):  # fmt: skip
        if isinstance(item, Progress) and item.stage == "attention":
            rss = _status_kb("VmRSS")
            first = rss if first is None else first
            stream_max = max(stream_max, rss)
        elif isinstance(item, AttentionPair):
            pair = item
    seconds = time.perf_counter() - t0
    assert pair is not None
    peak = _status_kb("VmHWM")
    return {"tiles": len(pair.coords), "seconds": seconds, "tiles_per_s": len(pair.coords) / seconds,
            "rss_before_mb": before / 1024, "rss_after_first_batch_mb": (first or before) / 1024,
            "stream_growth_mb": (stream_max - (first or before)) / 1024,
            "peak_mb": peak / 1024, "peak_increase_mb": (peak - before) / 1024 if reset else float("nan"),
            "peak_reset": reset, "map_shape": list(pair.teacher_map.shape), "overall_r": pair.overall_r,
            "teacher": teacher.spec.name, "student": student.spec.name}  # fmt: skip


def main(argv: list[str] | None = None) -> dict:
    """Generate the slide, run the measured child, print and return its numbers."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--side", type=int, default=30000, help="generated slide side in px (0.5 um/px)")
    p.add_argument("--tiles", type=int, default=1000)
    p.add_argument("--teacher", default="efficientnet-lite2-imagenet")
    p.add_argument("--student", default="pathdistill-student")
    p.add_argument("--tiny", action="store_true", help="tiny random models of both families instead (tests)")
    p.add_argument("--tile-px", type=int, default=112, help="tile px of --tiny models")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--overlap", type=float, default=0.5)
    p.add_argument("--device", default="auto")
    p.add_argument("--out", type=Path, default=Path("/tmp/attention_memory"))
    p.add_argument("--slide", type=Path, default=None, help=argparse.SUPPRESS)  # set for the child
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print("RESULT", json.dumps(child(args)))
        return {}
    args.out.mkdir(parents=True, exist_ok=True)
    slide = args.out / f"generated_{args.side}.tif"
    t0 = time.perf_counter()
    if not slide.exists():
        write_generated_slide(slide, args.side)
    print(
        f"slide {slide} ({args.side} px, {slide.stat().st_size / 2**20:.0f} MB) ready in {time.perf_counter() - t0:.1f} s"
    )
    load = os.getloadavg()
    print(f"load average before: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {os.cpu_count()} CPUs")
    cmd = [sys.executable, __file__, "--child", "--slide", str(slide), *[a for a in (argv or sys.argv[1:])]]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode or not lines:
        raise SystemExit(f"child failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    res = json.loads(lines[-1].removeprefix("RESULT "))
    res["loadavg_before"], res["loadavg_after"] = load[0], os.getloadavg()[0]
    print(f"{res['teacher']} vs {res['student']}: {res['tiles']} tiles in {res['seconds']:.1f} s "
          f"({res['tiles_per_s']:.1f} tiles/s), map {res['map_shape']}")  # fmt: skip
    print(f"RSS before {res['rss_before_mb']:.0f} MB, after the first batch {res['rss_after_first_batch_mb']:.0f} MB, "
          f"peak {res['peak_mb']:.0f} MB: peak increase {res['peak_increase_mb']:.0f} MB (target < 500 MB); "
          f"RSS growth from the first to the last batch {res['stream_growth_mb']:.0f} MB")  # fmt: skip
    print(f"load average after: {res['loadavg_after']:.2f}")
    print("RESULT", json.dumps(res))
    return res


if __name__ == "__main__":
    main()
