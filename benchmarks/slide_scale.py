"""Benchmark: the plugin at real slide scale, on a generated 40,000 x 30,000 px JPEG pyramid of real tissue
(``_big_slide.write_big_slide``, made once under ``--out`` and reused), side by side in one run:

a. reader open time and RSS delta (``_reader.get_reader``), in a fresh subprocess;
b. the Embed widget with the bundled ``pathdistill-student``: time to the first map update, embed time and
   tiles/s (``--embed-tiles N`` cancels after N tiles and extrapolates, labelled), the press (``run()``
   returning: it adds the run's empty map layers), the longest main-thread stall after it while embedding (a
   10 ms QTimer's largest gap, the full CPython garbage collections and napari's layer additions within it
   told apart) and the process's peak RSS (anonymous / mapped files);
c. cached re-open: the Embed widget again on the same slide (feature cache hit), and a 100,000-row feature
   file (the real features of the embedded tiles, repeated with 1 % noise, coords on a 317 x 317 lattice of a
   virtual 142k px slide) opened through the feature-file reader (``_feature_reader.read_features``);
d. click-to-similar-tiles latency on the 100k-tile map (the Embed widget's click path, ``show_similar``,
   and ``_qt.tile_search.TileSearchPanel.query`` when present), median and max over ``--clicks``;
e. pan frame time with the tissue widget's tile grid shown (``grid_pan.pan_frames``) for the big slide's real
   grid and a 100k-tile grid, as a ratio to the same viewer without a grid layer (measured in the same run);
f. ``--device cuda``: end-to-end ``embed_slide`` throughput of a random-init H0-mini-shape ViT-B/14 vs the
   5,000 tiles/s target.

Needs a display: ``xvfb-run -a python benchmarks/slide_scale.py [--quick] [--embed-tiles 2000]``. Writes
``slide_scale.json`` and ``slide_scale.md`` under ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from _big_slide import write_big_slide
from _slide_scale_meters import (
    GcMeter,
    StallMeter,
    cuda_rows,
    peak_rss_gb,
    reader_open,
    render,
    rss_gb,
    rss_parts_gb,
    table,
    tracked_objects,
)
from grid_pan import pan_frames, synthetic_grid


def ensure_slide(out: Path, width: int, height: int, compression: str = "jpeg") -> Path:
    """The big slide under ``out`` (written once, atomically, then reused)."""
    path = out / f"big_{width}x{height}{'' if compression == 'jpeg' else '_' + compression}.tif"
    if not path.exists():
        t0 = time.perf_counter()
        tmp = write_big_slide(path.with_suffix(".tmp.tif"), width, height, compression=compression)
        tmp.replace(path)
        print(f"wrote {path} ({path.stat().st_size / 2**20:.0f} MiB) in {time.perf_counter() - t0:.0f} s")
    return path


def _embed_widget(viewer, path: Path, model, cache: Path):
    from napari_pathdistill._qt.embed_widget import EmbedWidget
    from napari_pathdistill._reader import read_slide

    data, kwargs, _ = read_slide(str(path))[0]
    slide = viewer.add_image(data, **kwargs)
    widget = EmbedWidget(viewer)
    widget.model.set_model(model)
    widget.cache_dir.value = cache
    widget.slide.value = slide
    return widget


def run_widget(widget, limit: int, meter: StallMeter) -> dict:
    """(b, c) press Embed, pump the event loop; first map update, total time, stall, tiles done."""
    from qtpy.QtWidgets import QApplication

    first: list[float] = []
    paint = widget.paint_partial

    def timed_paint(*a):  # the first live map update
        first.append(time.perf_counter())
        return paint(*a)

    widget.paint_partial = timed_paint
    spans, stop_timing = _time_layer_adds(widget.viewer)
    gcs = GcMeter()
    gcs.start()
    t0 = time.perf_counter()
    widget.run()  # the press: the widget adds the run's (empty) map layers here, before the worker starts
    press = time.perf_counter() - t0
    meter.start()  # the stall while embedding: from the press's return to the result shown
    cancelled = False
    while widget.runner.running:
        QApplication.processEvents()
        if limit and widget.progress.value >= limit and not cancelled:
            widget.runner.cancel()
            cancelled = True
        time.sleep(0.002)
    total = time.perf_counter() - t0
    widget.paint_partial = paint
    done, stall = int(widget.progress.value), meter.stop()
    stop_timing()
    collections = gcs.stop()
    gaps = sorted(b - a for a, b in meter.gaps)
    return {"total_s": total, "press_ms": 1e3 * press, "gaps_over_50": len(gaps),
            "gaps_over_100": sum(g > 0.1 for g in gaps), "gap_median_ms": 1e3 * gaps[len(gaps) // 2] if gaps else 0.0,
            "first_map_s": (first[0] - t0) if first else None, "tiles": done,
            "grid_tiles": int(widget.progress.max), "stall_ms": 1e3 * stall, "cancelled": cancelled,
            "layer_adds_ms": [1e3 * (b - a) for a, b in spans], "gc_ms": [1e3 * (b - a) for a, b in collections],
            "tracked_objects": tracked_objects(), "stall_nogc_ms": 1e3 * meter.longest_outside(collections),
            "stall_other_ms": 1e3 * meter.longest_outside(spans + collections), "shown": widget.result is not None}  # fmt: skip


def _time_layer_adds(viewer):
    """Record (start, end) of every layer napari adds to ``viewer`` (its insert events); returns
    ``(spans, stop)``, ``stop()`` disconnects."""
    spans: list[tuple[float, float]] = []
    t: list[float] = []

    def inserting(_event=None):
        t[:] = [time.perf_counter()]

    def inserted(_event=None):
        if t:
            spans.append((t[0], time.perf_counter()))

    events = viewer.layers.events
    events.inserting.connect(inserting)
    events.inserted.connect(inserted)

    def stop():
        events.inserting.disconnect(inserting)
        events.inserted.disconnect(inserted)

    return spans, stop


def big_feature_file(
    src_h5: Path, out: Path, n: int = 100_000, dim: int = 0, seed: int = 0
) -> tuple[Path, Path]:
    """(c) ``n`` rows: the embedded tiles' real features repeated + 1 % noise (tiled to ``dim`` columns when
    ``dim`` > their width, e.g. 1536 for H0-mini's cls+mean), on a square lattice of 448 px. Two files: one as
    our writer leaves it (with the stored map summary, computed here as ``pathdistill embed`` does) and the same
    without it (as a CLAM/TRIDENT file or one of ours from before the summary)."""
    import h5py

    from napari_pathdistill.inference.map_summary import summarise, write_summary

    with h5py.File(src_h5) as f:
        feats, attrs = f["features"][()], dict(f.attrs)
    if dim > feats.shape[1]:
        feats = np.tile(feats, (1, -(-dim // feats.shape[1])))[:, :dim]
    rng = np.random.default_rng(seed)
    rows = feats[np.arange(n) % len(feats)]
    rows += 0.01 * rows.std(0) * rng.standard_normal(rows.shape, dtype=np.float32)
    side, step = int(np.ceil(np.sqrt(n))), int(attrs["patch_size_level0"])
    r, c = np.divmod(np.arange(n), side)
    paths = (out / f"features_{n}x{rows.shape[1]}.h5", out / f"features_{n}x{rows.shape[1]}_nomap.h5")
    t0 = time.perf_counter()
    summary = summarise(rows, 6)
    print(f"map summary of {n} x {rows.shape[1]}: {time.perf_counter() - t0:.1f} s (at the end of an embed)")
    for path in paths:
        with h5py.File(path, "w") as f:
            f["features"] = rows.astype(np.float32)
            f["coords"] = np.stack([c * step, r * step], 1).astype(np.int64)
            for key in ("model", "tile_px", "mpp", "patch_size_level0", "patch_level"):
                f.attrs[key] = attrs[key]
            if path is paths[0]:
                write_summary(f, summary)
    return paths


_BUILD = """import sys
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from slide_scale import big_feature_file
print(*big_feature_file(Path(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])), sep="\\n")"""


def big_feature_files(src_h5: Path, out: Path, n: int, dim: int) -> tuple[Path, Path]:
    """:func:`big_feature_file` in a fresh interpreter: its arrays are the benchmark's test data, not memory
    the viewer holds, so they stay out of the viewer process's RSS."""
    import subprocess

    args = [sys.executable, "-c", _BUILD, str(Path(__file__).parent), str(src_h5), str(out), str(n), str(dim)]
    res = subprocess.run(args, capture_output=True, text=True, check=True)
    *notes, a, b = res.stdout.strip().splitlines()
    print(*notes, sep="\n")
    return Path(a), Path(b)


def open_features(viewer, path: Path) -> tuple[float, list]:
    """(c) a feature file through the feature-file reader into the viewer; (seconds until shown, its layers)."""
    from qtpy.QtWidgets import QApplication

    from napari_pathdistill._feature_reader import read_features

    t0 = time.perf_counter()
    added = [getattr(viewer, f"add_{kind}")(data, **kw) for data, kw, kind in read_features(str(path))]
    QApplication.processEvents()
    viewer.screenshot(canvas_only=True, flash=False)
    return time.perf_counter() - t0, added


def release_removed_layers() -> None:
    """What napari's running event loop does after a layer removal, which this script's processEvents does
    not: deliver the deferred deletes of the removed layers' Qt controls (they hold the layers, so their data),
    then collect. Without it the removed layers stay alive and their memory counts in the RSS below."""
    import gc

    from qtpy.QtCore import QEvent
    from qtpy.QtWidgets import QApplication

    app = QApplication.instance()
    for _ in range(3):
        app.sendPostedEvents(None, QEvent.Type.DeferredDelete)
        app.processEvents()
        gc.collect()


def clicks(viewer, widget, layer, n: int) -> dict:
    """(d) click-to-result latency on a map layer: the widget's click path and H3's panel if present."""
    from qtpy.QtWidgets import QApplication

    smap = layer.metadata["pathdistill"]["slide_map"]
    rng = np.random.default_rng(0)
    idx = rng.choice(len(smap.features), n, replace=False)
    centres = smap.tile_centers()
    out: dict = {"click_tiles": len(smap.features)}
    times, compute = [], []
    for i in idx:  # the widget's click handler: top-k points + the heatmap (one shared cosine product)
        t0 = time.perf_counter()
        hit = _map_layer_at(viewer, centres[i])
        widget.search_tile(hit[1], hit[0])
        compute.append(time.perf_counter() - t0)
        QApplication.processEvents()
        viewer.screenshot(canvas_only=True, flash=False)
        times.append(time.perf_counter() - t0)
    out["widget_click_ms"] = (1e3 * float(np.median(times)), 1e3 * float(np.max(times)))
    out["widget_first_click_ms"] = 1e3 * times[0]  # adds the points and heatmap layers
    out["widget_click_compute_ms"] = (1e3 * float(np.median(compute)), 1e3 * float(np.max(compute)))
    try:
        from napari_pathdistill._qt.tile_search import TileSearchPanel
    except ImportError as exc:
        print(f"not available: TileSearchPanel ({exc})")
        return out
    panel, times = TileSearchPanel(viewer), []
    for i in idx:
        t0 = time.perf_counter()
        panel.query(layer, int(i))
        QApplication.processEvents()
        viewer.screenshot(canvas_only=True, flash=False)
        times.append(time.perf_counter() - t0)
    out["heatmap_click_ms"] = (1e3 * float(np.median(times)), 1e3 * float(np.max(times)))
    return out


def _map_layer_at(viewer, world_yx):
    from napari_pathdistill._qt.embed_widget import map_layer_at

    hit = map_layer_at(viewer, world_yx)
    assert hit is not None, "the tile centre is on no map layer"
    return hit


def pan(path: Path, steps: int, big: int, mpp: float) -> dict:
    """(e) pan frame time with the tissue widget's grid raster: the big slide's real grid and ``big`` tiles, and
    the same viewer without a grid layer (the baseline of the ratios)."""
    from napari_pathdistill.wsi.tissue_grid import tissue_grid

    grid = tissue_grid(path, mpp=mpp).grid  # the grid (b) embedded
    out = {}
    for name, g, kind in (
        ("none", grid, "none"),
        ("real", grid, "labels"),
        ("synthetic", synthetic_grid(big), "labels"),
    ):
        r = pan_frames(g, kind, steps)
        out[f"pan_{name}"] = (r["tiles"], 1e3 * r["median_s"], 1e3 * r["max_s"])
    return out


def cuda_throughput(path: Path, out: Path, batch: int, workers: int = 8, device: str = "cuda") -> dict:
    """(f) random-init H0-mini (ViT-B/14) ``embed_slide`` end to end on the GPU (``device="cpu"``: a rehearsal)."""
    import h5py

    from napari_pathdistill.inference.embed import embed_slide
    from napari_pathdistill.models import load_model

    model = load_model("h0-mini", device=device, pretrained=False)
    res: dict = {}
    for run in ("warm-up", "measured"):  # the first run pays CUDA/cuDNN init and the cold page cache
        stamps: list[tuple[float, int]] = []
        t0 = time.perf_counter()
        h5 = embed_slide(path, model, out / "cuda", batch_size=batch, num_workers=workers, overwrite=True,
                         chunk_batches=1,  # a progress stamp per batch: the steady rate has 2,352 / batch points
                         progress=lambda p, st=stamps: st.append((time.perf_counter(), p.done)))  # fmt: skip
        dt = time.perf_counter() - t0
        with h5py.File(h5) as f:
            n = len(f["coords"])
        tiles = [(t, d) for t, d in stamps if 0 < d < n]  # between the first and the last batch's progress
        steady = (
            (tiles[-1][1] - tiles[0][1]) / (tiles[-1][0] - tiles[0][0]) if len(tiles) > 1 else float("nan")
        )
        res[run] = {"tiles": n, "s": dt, "tiles_s": n / dt, "steady_tiles_s": steady}
    m = res["measured"]
    return {"cuda_tiles": m["tiles"], "cuda_s": m["s"], "cuda_tiles_s": m["tiles_s"],
            "cuda_steady_tiles_s": m["steady_tiles_s"], "cuda_runs": res, "cuda_workers": workers,
            "cuda_batch": batch, "cuda_device": device}  # fmt: skip


def _source_features(cache: Path) -> Path:
    """The feature file the widget wrote (complete, else its .partial with ``done`` rows)."""
    import h5py

    files = sorted(cache.glob("*.h5")) or sorted(cache.glob("*.h5.partial"))
    src = files[0]
    with h5py.File(src) as f:
        done = int(f.attrs.get("done", len(f["coords"])))
        if done == len(f["coords"]):
            return src
        rows = {k: f[k][:done] for k in ("features", "coords")}
        attrs = dict(f.attrs)
    trimmed = cache.parent / "embedded_rows.h5"
    with h5py.File(trimmed, "w") as f:
        for k, v in rows.items():
            f[k] = v
        f.attrs.update(attrs)
    return trimmed


def widget_section(path: Path, out: Path, args: argparse.Namespace) -> dict:
    """(b), (c), (d) in one viewer."""
    import shutil

    import napari

    from napari_pathdistill.models import load_model

    res: dict = {}
    cache = out / "cache"
    shutil.rmtree(cache, ignore_errors=True)  # a cold embed; the re-open below is the warm one
    viewer = napari.Viewer(show=True)
    viewer.window._qt_window.resize(1200, 900)
    meter = StallMeter()
    try:
        model = load_model(args.model, device="cpu")
        widget = _embed_widget(viewer, path, model, cache)
        widget.mpp.value = args.mpp
        res["rss_before_embed_gb"], res["rss_parts_before_embed"] = rss_gb(), rss_parts_gb()
        res["embed"] = run_widget(widget, args.embed_tiles, meter)
        res["peak_rss_after_embed_gb"], res["rss_parts_after_embed"] = peak_rss_gb(), rss_parts_gb()
        if res["embed"]["cancelled"]:
            print(f"not available: widget cache re-open (embed cancelled at {res['embed']['tiles']} tiles)")
        else:
            widget.result = None
            res["reopen_widget"] = run_widget(widget, 0, meter)
        big, nomap = big_feature_files(_source_features(cache), out, args.feature_rows, args.feature_dim)
        res["reopen_100k_nomap_s"], added = open_features(viewer, nomap)
        res["peak_rss_after_nomap_gb"] = peak_rss_gb()
        while added:  # no name left holding a removed layer
            viewer.layers.remove(added.pop())
        release_removed_layers()
        res["rss_after_nomap_removed_gb"] = rss_gb()
        res["reopen_100k_s"], added = open_features(viewer, big)
        layer = added[-1]  # the clusters layer (the map layer clicks go to)
        res["rss_after_reopen_gb"] = rss_gb()
        res.update(clicks(viewer, widget, layer, args.clicks))
        viewer.screenshot(str(out / "slide_scale_viewer.png"), canvas_only=False, flash=False)
        res["rss_parts_end"] = rss_parts_gb()
    finally:
        viewer.close()
    res["peak_rss_gb"] = peak_rss_gb()
    return res


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("outputs/benchmarks/slide_scale"))
    p.add_argument("--width", type=int, default=40_000)
    p.add_argument("--height", type=int, default=30_000)
    p.add_argument("--slide", type=Path, default=None, help="an existing slide instead of the generated one")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--model", default="pathdistill-student")
    p.add_argument("--mpp", type=float, default=0.5, help="um/px of the embedded tiles")
    p.add_argument(
        "--embed-tiles", type=int, default=0, help="cancel the embed after N tiles (0: whole grid)"
    )
    p.add_argument("--feature-rows", type=int, default=100_000)
    p.add_argument(
        "--feature-dim",
        type=int,
        default=0,
        help="columns of the 100k-row file (0: the embedded model's; 1536: H0-mini cls+mean)",
    )
    p.add_argument("--clicks", type=int, default=20)
    p.add_argument("--pan-steps", type=int, default=20)
    p.add_argument("--cuda-batch", type=int, default=256)
    p.add_argument("--cuda-workers", type=int, default=8, help="reader threads of the (f) embed")
    p.add_argument("--only-cuda", action="store_true", help="(f) alone: no viewer, no display needed")
    p.add_argument("--quick", action="store_true", help="6,000 x 4,500 px, 1 um/px, 3,000 rows")
    p.add_argument("--compression", choices=("jpeg", "zlib"), default="jpeg", help="of the generated slide")
    args = p.parse_args(argv)
    if args.quick:
        args.width, args.height, args.mpp, args.feature_rows, args.clicks, args.pan_steps = 6000, 4500, 1.0, 3000, 3, 2  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    r: dict = {
        "load_start": os.getloadavg(),
        "cpus": os.cpu_count(),
        "argv": sys.argv[1:] if argv is None else argv,
    }
    path = args.slide or ensure_slide(args.out, args.width, args.height, args.compression)
    r["slide"] = {"path": str(path), "mib": path.stat().st_size / 2**20}  # fmt: skip
    if not args.only_cuda:
        r["open"] = reader_open(path)
        r.update(widget_section(path, args.out, args))
        r.update(pan(path, args.pan_steps, args.feature_rows, args.mpp))
    if args.device == "cuda" or args.only_cuda:
        r.update(cuda_throughput(path, args.out, args.cuda_batch, args.cuda_workers, args.device))
    r["load_end"] = os.getloadavg()
    md = render(cuda_rows(r)) if args.only_cuda else table(r)
    load = f"load average at start {r['load_start']}, at end {r['load_end']}; {r['cpus']} CPUs"
    print(md + "\n\n" + load)
    (args.out / "slide_scale.md").write_text(md + "\n\n" + load + "\n")
    (args.out / "slide_scale.json").write_text(json.dumps(r, indent=1, default=str))
    return r


if __name__ == "__main__":
    main()
