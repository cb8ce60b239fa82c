"""Benchmark: pan frame time of the tissue widget's tile grid, Shapes rectangles (before) vs the Labels raster
of tile ids (now), at 14,459 and ~100,000 tiles, in one run.

The grids are those of a 0.25 um/px slide cut in 224 px tiles at 0.5 um/px (448 level-0 px), kept inside an
ellipse (about 60 % of a square grid), built with ``TileGrid`` directly (no slide is read). Each layer is added to
a fresh viewer on top of a grey slide-sized image, exactly as ``TissueWidget`` adds it (``tile_id_raster`` +
``tile_colormap`` + ``tile_features``; before: ``grid_to_shapes`` rectangles with a yellow edge). The view
is zoomed to show a quarter of the slide's width, then the camera centre moves ``--steps`` times by 5 % of the
view; a frame is ``viewer.camera.center = ...`` + ``QApplication.processEvents()`` + a canvas screenshot (a
synchronous render). The baseline is the same without a grid layer: each kind's median frame is printed as a
ratio to it (and the ms it adds). Needs a display (``xvfb-run -a``)::

    xvfb-run -a python benchmarks/grid_pan.py [--tiles 14459,100000] [--steps 20] [--quick]
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

from napari_pathdistill.wsi.tiling import TileGrid

SLIDE_MPP, TILE_L0 = 0.25, 448.0


def synthetic_grid(n_tiles: int) -> TileGrid:
    """A TileGrid of about ``n_tiles`` tiles inside an ellipse of a square grid (448 level-0 px tiles)."""
    side = int(np.ceil(np.sqrt(n_tiles / (np.pi / 4))))
    yy, xx = np.mgrid[0:side, 0:side]
    inside = ((yy + 0.5 - side / 2) ** 2 + (xx + 0.5 - side / 2) ** 2) <= (side / 2) ** 2
    rows, cols = np.nonzero(inside)
    coords = np.stack([np.round(cols * TILE_L0), np.round(rows * TILE_L0)], axis=1).astype(np.int64)
    frac = np.random.default_rng(0).uniform(0.5, 1.0, len(coords))
    shape = (int(side * TILE_L0), int(side * TILE_L0))
    return TileGrid(coords, 224, 0.5, TILE_L0, 0, frac, shape)


def _add_grid(viewer, grid: TileGrid, kind: str) -> float:
    """Add the grid layer as ``kind`` ("shapes" = before, "labels" = now, "none"); seconds it took."""
    from napari_pathdistill._qt.tissue_widget import tile_colormap
    from napari_pathdistill.wsi.tile_raster import raster_features
    from napari_pathdistill.wsi.tiling import grid_to_shapes
    from napari_pathdistill.wsi.tissue_grid import tile_features, tile_id_raster

    t0 = time.perf_counter()
    if kind == "shapes":
        viewer.add_shapes(list(grid_to_shapes(grid)), shape_type="rectangle", edge_color="yellow",
                          face_color="transparent", edge_width=grid.size_level0 * 0.02 * SLIDE_MPP,
                          features={"tissue_fraction": grid.tissue_fraction}, name="tiles")  # fmt: skip
    elif kind == "labels":
        r = tile_id_raster(grid)
        viewer.add_labels(r.data, scale=r.scale, translate=r.translate, opacity=0.45, name="tiles",
                          multiscale=r.multiscale, features=raster_features(tile_features(grid)),
                          colormap=tile_colormap())  # fmt: skip
    return time.perf_counter() - t0


def pan_frames(grid: TileGrid, kind: str, steps: int) -> dict:
    """Frame times (s) of ``steps`` pan steps with the grid shown as ``kind``, in a fresh viewer."""
    import napari
    from qtpy.QtWidgets import QApplication

    viewer = napari.Viewer(show=True)
    try:
        viewer.window._qt_window.resize(1200, 900)
        h, w = grid.slide_shape
        viewer.add_image(np.full((64, 64), 200, np.uint8), scale=(h * SLIDE_MPP / 64, w * SLIDE_MPP / 64),
                         name="slide")  # fmt: skip
        add_s = _add_grid(viewer, grid, kind)
        viewer.reset_view()
        viewer.camera.zoom *= 4  # a quarter of the slide's width in view
        for _ in range(3):
            QApplication.processEvents()
        viewer.screenshot(canvas_only=True, flash=False)  # first draw (textures, meshes) is not a pan step
        cy, cx = viewer.camera.center[-2:]
        step = 0.05 * w * SLIDE_MPP / 4
        times = []
        for i in range(steps):
            t0 = time.perf_counter()
            viewer.camera.center = (cy + step * (i % 5), cx + step * i)
            QApplication.processEvents()
            viewer.screenshot(canvas_only=True, flash=False)
            times.append(time.perf_counter() - t0)
        return {"kind": kind, "tiles": len(grid), "add_s": add_s, "median_s": float(np.median(times)),
                "max_s": float(np.max(times))}  # fmt: skip
    finally:
        viewer.close()


def _vs_baseline(rows: list[dict]) -> None:
    """Print each grid kind's median frame against the same run's frame without a grid (``none``)."""
    base = next((r["median_s"] for r in rows if r["kind"] == "none"), None)
    for r in rows:
        if base and r["kind"] != "none":
            r["vs_none"] = r["median_s"] / base
            print(f"{r['tiles']:>7} tiles  {r['kind']:<7} pan frame x{r['vs_none']:.2f} of no grid "
                  f"({1e3 * (r['median_s'] - base):+.1f} ms)")  # fmt: skip


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tiles", default="14459,100000")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--kinds", default="none,shapes,labels")
    p.add_argument("--quick", action="store_true", help="500 and 2,000 tiles, 3 steps: a smoke run")
    args = p.parse_args(argv)
    if args.quick:
        args.tiles, args.steps = "500,2000", 3
    load_before = os.getloadavg()
    rows = []
    for n in (int(v) for v in args.tiles.split(",")):
        grid = synthetic_grid(n)
        for kind in args.kinds.split(","):
            rows.append(pan_frames(grid, kind, args.steps))
            r = rows[-1]
            print(f"{r['tiles']:>7} tiles  {kind:<7} add {r['add_s']:6.2f} s  pan frame median "
                  f"{1e3 * r['median_s']:7.1f} ms  max {1e3 * r['max_s']:7.1f} ms", flush=True)  # fmt: skip
        _vs_baseline([r for r in rows if r["tiles"] == rows[-1]["tiles"]])
    print(f"load average before {load_before}, after {os.getloadavg()}; {os.cpu_count()} CPUs")
    return rows


if __name__ == "__main__":
    main()
