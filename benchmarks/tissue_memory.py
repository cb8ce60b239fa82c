"""Benchmark: peak memory of tissue detection does not grow with the slide.

Pyramidal JPEG TIFFs of real tissue (``_big_slide.write_big_slide``: CMU / TCGA H&E islands on glass, levels
downsampled by 2) are generated once under ``--dir`` (15,000 x 15,000 and 40,000 x 30,000 px by default; about
25 s and 100 s). For each slide a child process opens it, resets its peak RSS (``/proc/self/clear_refs``) and
warms up (a 64 px detection), runs ``detection_thumbnail`` (the block-wise thumbnail read) then ``detect_tissue`` on it; it reports the RSS
increase of each step over the RSS after opening, side by side, with the load average before and after (a shared
machine's other work slows the run; the memory does not depend on it). Run from the repository root::

    python benchmarks/tissue_memory.py [--sizes 15000x15000,40000x30000] [--dir /tmp/pathdistill_bench]
        [--slides a.tif b.svs] [--quick]

Target (issue 12, item 5): the peak increase is the same on both slides (bounded by ``MAX_DETECTION_PIXELS``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

_CHILD = r"""
import json, re, sys, time
from pathlib import Path

def kb(key):
    return int(re.search(key + r":\s+(\d+) kB", Path("/proc/self/status").read_text()).group(1))

def reset():
    Path("/proc/self/clear_refs").write_text("5")

from napari_pathdistill.wsi import open_pyramid
from napari_pathdistill.wsi.tissue import detect_tissue, detection_thumbnail

with open_pyramid(sys.argv[1]) as pyr:
    detect_tissue(pyr, thumbnail=(pyr.read_region((0, 0), 0, (64, 64)), 1.0))  # code and libraries loaded
    base = kb("VmRSS"); reset(); t0 = time.perf_counter()
    thumb = detection_thumbnail(pyr)
    t1, read_peak = time.perf_counter(), kb("VmHWM"); reset()
    mask = detect_tissue(pyr, thumbnail=thumb)
    t2, detect_peak = time.perf_counter(), kb("VmHWM")
    h0, w0 = pyr.levels[0].shape
    level = pyr.best_level_for_downsample(max(h0, w0) / max(thumb[0].shape[:2]))
    print("RESULT", json.dumps({
        "slide": Path(sys.argv[1]).name, "level0": [w0, h0], "levels": len(pyr.levels),
        "level_read": [pyr.levels[level].shape[1], pyr.levels[level].shape[0]],
        "thumbnail": [thumb[0].shape[1], thumb[0].shape[0]], "tissue": float(mask.mask.mean()),
        "read_mb": (read_peak - base) / 1024, "detect_mb": (detect_peak - base) / 1024,
        "read_s": t1 - t0, "detect_s": t2 - t1}))
"""


def measure(path: Path) -> dict:
    """Run the child on ``path``; its result row (MB are RSS increases over the RSS after opening)."""
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, str(path)], capture_output=True, text=True, timeout=1800
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode or not lines:
        raise RuntimeError(f"measurement of {path} failed:\n{proc.stderr[-3000:]}")
    row = json.loads(lines[-1][7:])
    w, h = row["thumbnail"]
    row["detect_bytes_per_px"] = row["detect_mb"] * 2**20 / (w * h)
    return row


def _slides(args: argparse.Namespace) -> list[Path]:
    if args.slides:
        return [Path(p) for p in args.slides]
    sys.path.insert(0, str(Path(__file__).parent))
    from _big_slide import write_big_slide

    out = []
    for size in args.sizes.split(","):
        w, h = (int(v) for v in size.lower().split("x"))
        path = args.dir / f"tissue_slide_{w}x{h}.tif"
        if not path.exists():
            args.dir.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".partial.tif")
            write_big_slide(tmp, w, h)
            tmp.replace(path)
        out.append(path)
    return out


def _table(rows: list[dict]) -> str:
    head = ["slide (w x h)", "levels", "level read", "thumbnail", "tissue", "read MB", "detect MB",
            "detect B/px", "read s", "detect s"]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [f"{r['level0'][0]} x {r['level0'][1]}", str(r["levels"]), "x".join(map(str, r["level_read"])),
                 "x".join(map(str, r["thumbnail"])), f"{r['tissue']:.2f}", f"{r['read_mb']:.0f}",
                 f"{r['detect_mb']:.0f}", f"{r['detect_bytes_per_px']:.0f}", f"{r['read_s']:.1f}",
                 f"{r['detect_s']:.1f}"]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="15000x15000,40000x30000")
    p.add_argument("--dir", type=Path, default=Path("/tmp/pathdistill_bench"))
    p.add_argument("--slides", nargs="*", help="measure these files instead of generated ones")
    p.add_argument(
        "--quick", action="store_true", help="small slides (3000 x 3000, 6000 x 4500): a smoke run"
    )
    args = p.parse_args(argv)
    if args.quick:
        args.sizes = "3000x3000,6000x4500"
    slides = _slides(args)
    load_before = os.getloadavg()
    rows = [measure(s) for s in slides]
    load_after = os.getloadavg()
    print(_table(rows))
    print(f"load average (1, 5, 15 min) before {load_before}, after {load_after}; {os.cpu_count()} CPUs")
    return {"rows": rows, "load_before": load_before, "load_after": load_after}


if __name__ == "__main__":
    main()
