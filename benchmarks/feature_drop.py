"""Benchmark: the longest main-thread stall when a 100k-row TRIDENT feature file is dropped on napari (issue 12,
items 1 and 5): its map computed on the main thread (before) vs in the reader's worker (now), side by side.

The file is written as TRIDENT's ``save_h5`` writes it (one HDF5 chunk per row, coords attrs with
``patch_size_level0`` and ``level0_magnification``) for the real slide ``CMU-1-Small-Region.svs`` (2220 x 2967
px) cut in ``--tile`` px tiles (8 px: 102,490 tiles), each tile's features (``--dim``, 1,536 like H0-mini's cls +
mean) a random projection of its mean colour plus noise, so the map shows the tissue. A viewer shows the slide;
a small file is dropped first so that both runs find napari's and the reader's modules imported and a Labels
layer built. Then, per mode, ``viewer.open(file)`` as a drop does, while a 10 ms QTimer measures the largest gap
of the event loop (``_slide_scale_meters.StallMeter``) until the map is filled, overall and after ``open()``
returned (the worker's start, the GIL it holds in turns, the layers' filling); each run's layers stay (removing
them, then opening a slide, crashed napari's OpenGL draw here: see the session report). "before" is the same reader with deferral off (``deferred_map.DEFER_MIN_ROWS`` above the rows), the code
path every file took until now. Needs a display::

    xvfb-run -a python benchmarks/feature_drop.py [--tile 8] [--dim 1536] [--out DIR] [--screenshot PNG]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from _data import CMU as SLIDE
from _slide_scale_meters import StallMeter


def trident_file(out: Path, tile: int, dim: int) -> Path:
    """``<out>/CMU-1-Small-Region.h5`` in TRIDENT's layout (made once, reused)."""
    import h5py
    import openslide

    path = out / f"{SLIDE.stem}.h5"
    if path.exists():
        return path
    with openslide.OpenSlide(str(SLIDE)) as s:
        w, h = s.dimensions
        img = np.asarray(s.read_region((0, 0), 0, (w, h)).convert("RGB"), np.float32) / 255
    ny, nx = h // tile, w // tile
    colour = img[: ny * tile, : nx * tile].reshape(ny, tile, nx, tile, 3).mean((1, 3)).reshape(-1, 3)
    xs, ys = np.meshgrid(np.arange(nx) * tile, np.arange(ny) * tile)
    rng = np.random.default_rng(0)
    feats = colour @ rng.standard_normal((3, dim)).astype(np.float32) * 4
    feats += rng.standard_normal(feats.shape, dtype=np.float32) * 0.3
    tmp = path.with_suffix(".partial")
    with h5py.File(tmp, "w") as f:
        f.create_dataset("features", data=feats, maxshape=(None, dim), chunks=(1, dim))
        c = f.create_dataset("coords", data=np.c_[xs.ravel(), ys.ravel()].astype(np.int64), chunks=(1, 2))
        c.attrs.update({"patch_size": tile, "patch_size_level0": tile, "level0_magnification": 20,
                        "target_magnification": 20, "overlap": 0, "name": SLIDE.stem,
                        "level0_width": w, "level0_height": h})  # fmt: skip
    tmp.rename(path)
    return path


def drop(viewer, path: Path) -> dict:
    """``viewer.open(path)`` until its map is filled: seconds to return, to the map, longest stall."""
    from napari_pathdistill._qt.deferred_map import wait_for_maps

    meter = StallMeter()
    meter.start()
    t0 = time.perf_counter()
    layers = viewer.open(str(path), plugin="napari-pathdistill")
    t_return = time.perf_counter()
    at_return = "slide_map" in layers[-1].metadata["pathdistill"]
    wait_for_maps(600)
    ready = time.perf_counter() - t0
    stall = meter.stop()
    assert "slide_map" in layers[-1].metadata["pathdistill"]
    after = [b - max(a, t_return) for a, b in meter.gaps if b > t_return]  # gaps over 50 ms only
    return {"return_s": t_return - t0, "map_s": ready, "map_at_return": at_return, "stall_ms": 1e3 * stall,
            "stall_after_ms": 1e3 * max(after, default=0.0), "layers": layers}  # fmt: skip


def main(argv: list[str] | None = None) -> dict:
    import napari
    from qtpy.QtWidgets import QApplication

    from napari_pathdistill._qt import deferred_map

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tile", type=int, default=8, help="tile side in level-0 px (8: 102,490 tiles)")
    p.add_argument("--dim", type=int, default=1536)
    p.add_argument("--out", type=Path, default=None, help="folder for the file (default: a temporary one)")
    p.add_argument("--screenshot", type=Path, default=None, help="save the viewer after the worker's drop")
    args = p.parse_args(argv)
    tmp = tempfile.TemporaryDirectory() if args.out is None else None
    out = Path(tmp.name) if tmp is not None else args.out
    out.mkdir(parents=True, exist_ok=True)
    big = trident_file(out, args.tile, args.dim)
    (out / "small").mkdir(exist_ok=True)
    small = trident_file(out / "small", 128, 64)  # 391 tiles: read at once
    viewer = napari.Viewer(show=True)
    res: dict = {}
    default = deferred_map.DEFER_MIN_ROWS
    try:
        viewer.open(str(SLIDE), plugin="napari-pathdistill")
        drop(viewer, small)  # imports and napari's first Labels layer: both runs warm
        for name, rows in (("before: map on the main thread", 10**12), ("now: map in the worker", None)):
            QApplication.processEvents()
            deferred_map.DEFER_MIN_ROWS = rows or default
            res[name] = drop(viewer, big)
        viewer.reset_view()
        if args.screenshot is not None:
            QApplication.processEvents()
            viewer.screenshot(str(args.screenshot), canvas_only=False, flash=False)
    finally:
        viewer.close()
        deferred_map.DEFER_MIN_ROWS = default
    n = len(res["now: map in the worker"]["layers"][-1].metadata["pathdistill"]["slide_map"].clusters)
    print(f"{n:,} x {args.dim} TRIDENT file; load average {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    for name, r in res.items():
        after = f"{r['stall_after_ms']:.0f} ms" if r["stall_after_ms"] else "< 50 ms"
        print(f"  {name:32s} open() returns {r['return_s']:6.2f} s  map shown {r['map_s']:6.2f} s  "
              f"longest main-thread stall {r['stall_ms']:6.0f} ms (after open() returned: {after})")  # fmt: skip
    before, now = (r["stall_ms"] for r in res.values())
    print(f"  longest stall before / now: {before / now:.1f}x")
    return res


if __name__ == "__main__":
    main()
