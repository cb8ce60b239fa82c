"""Benchmark: tiles/s of tile embedding, end to end from a real slide and model only, vs the machine's matmul peak.

Run from the repository root (issue 7, item 6)::

    python benchmarks/embed.py                    # CPU: student, EfficientNet-Lite2 teacher, ViT-B/14, ViT-g/14
    python benchmarks/embed.py --quick            # smoke: a few tiles per model, ViT-g/14 left out
    python benchmarks/embed.py --device cuda      # GPU: bf16 autocast, batch 256, ViT-B/14 vs the 5,000 tiles/s target

Everything is measured side by side in one process (other load on the machine shifts all rows alike, so the
printed ratios are what to compare):

* **matmul peak**: best of a few large ``torch.matmul`` (fp32 on CPU, bf16 on GPU), in FLOP/s;
* **FLOPs per tile**: ``torch.utils.flop_counter.FlopCounterMode`` on one 224 px tile (forward + pooling);
* **end to end**: ``napari_pathdistill.inference.embed.iter_embeddings`` over the tissue tile grid of a real
  slide (default ``../shared/data/wsi/CMU-1-Small-Region.svs``, 53 tissue tiles of 224 px at 0.5 um/px). The
  slide is small, so it is embedded in passes, each on a freshly opened slide (cold OpenSlide tile cache, as on
  a big slide); tissue detection is done once beforehand and reported apart;
* **model only**: the same forward on a pre-loaded, pre-normalised tensor batch of real tiles;
* **loader only**: ``read_tiles`` over the same passes with no model, batches read by the same number of
  threads as ``iter_embeddings`` uses (``--num-workers``).

Models are timed round-robin in a few rounds (each row keeps its best round, ``--repeats``), so every model
sees the same background load; the matmul peak is re-measured in every round (best kept). The ``bound``
column says what limits end to end: ``model`` (>= 80 % of model only), ``loader`` (reading alone is not
clearly faster than the model) or ``pipeline`` (reading and compute overlap badly or compete for the same
cores). Models: the bundled student (``load_model("pathdistill-student")``), the ImageNet EfficientNet-Lite2
teacher, and RANDOMLY INITIALISED models of the exact registry architectures of H0-mini (ViT-B/14) and
H-optimus-0 (ViT-g/14): their speed does not depend on the weights.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import os
import time
from pathlib import Path

import torch

from _data import CMU as DEFAULT_SLIDE
from _data import ROOT
from _throughput import Job, Row, bench_all, machine, paired_ratio, prepare, tile_grid

MODELS = ("pathdistill-student", "efficientnet-lite2-imagenet", "h0-mini", "h-optimus-0")
RANDOM_INIT = (
    "h0-mini",
    "h-optimus-0",
)  # hub weights unavailable offline: exact architecture, random weights
# row labels; a model whose spec's model_kwargs reshape its timm arch gets ModelSpec.shape_summary appended, read
# from the spec it loads (the bundled student: its shipped config.json), e.g. "bundled student ViT patch16 d192 x5 h3"
LABELS = {
    "pathdistill-student": "bundled student",
    "efficientnet-lite2-imagenet": "teacher EfficientNet-Lite2",
    "h0-mini": "H0-mini ViT-B/14 (random init)",
    "h-optimus-0": "H-optimus-0 ViT-g/14 (random init)",
}
# tiles timed per model, timing rounds (best kept) and batch sizes: (cpu, cuda, quick)
TILES = {"h0-mini": (16, 20_000, 4), "h-optimus-0": (8, 4_096, 2)}
DEFAULT_TILES = (47, 20_000, 16)
REPEATS = {"h0-mini": (4, 3, 1), "h-optimus-0": (1, 3, 1)}
DEFAULT_REPEATS = (8, 3, 1)
BATCH = {"h-optimus-0": (4, 64)}
DEFAULT_BATCH = (16, 256)
GPU_TARGET = ("h0-mini", 5_000.0)  # issue 7: ViT-B/14 >= 5,000 tiles/s end to end on an H100


def build_model(name: str, device: torch.device):
    """``load_model`` for checkpoints, the student and the pip teacher; random init for hub-only ViTs."""
    from napari_pathdistill.models import load_model
    from napari_pathdistill.models.embedding_model import EmbeddingModel
    from napari_pathdistill.models.registry import get_spec
    from napari_pathdistill.models.spec import build_module

    if name in RANDOM_INIT:
        torch.manual_seed(0)
        return EmbeddingModel(get_spec(name), build_module(get_spec(name)), device)
    return load_model(name, str(device))


def label(name: str, spec) -> str:
    """The row label: :data:`LABELS` (else the name) plus the shape the spec's kwargs set over its timm arch."""
    base = LABELS.get(name, name)
    return f"{base} {spec.shape_summary}" if spec.shape_summary else base


def table(rows: list[Row], peak: float) -> str:
    """Markdown table. Speed-ups: the reference model's (first row) tiles/s over each row's, as the ratio of
    the best rounds and as the median of the per-round ratios; tiles/s ranges are min-max over the rounds."""
    ref = rows[0]
    head = ("| model | params (M) | GFLOPs/tile | batch | tiles x rounds | end to end tiles/s (range) "
            "| model only tiles/s (range) | loader only tiles/s | e2e / model only | bound "
            f"| % of matmul peak (model only / e2e) | {ref.model} speed-up, model only (best / paired) "
            f"| {ref.model} speed-up, e2e (best / paired) |")  # fmt: skip
    lines = [head, "|" + "---|" * (head.count(" | ") + 1)]
    for r in rows:
        (e0, e1), (m0, m1) = r.spread("end_to_end"), r.spread("model_only")
        lines.append(
            f"| {r.label} | {r.params_m:.1f} | {r.gflops_per_tile:.2f} | {r.batch} | {r.n_tiles} x {len(r.rounds)} "
            f"| {r.end_to_end:.3g} ({e0:.3g}-{e1:.3g}) | {r.model_only:.3g} ({m0:.3g}-{m1:.3g}) | {r.loader_only:.0f} "
            f"| {r.end_to_end / r.model_only:.2f} | {r.bound} "
            f"| {100 * r.fraction(peak):.0f} / {100 * r.fraction(peak, 'end_to_end'):.0f} "
            f"| x{ref.model_only / r.model_only:.3g} / x{paired_ratio(ref, r, 'model_only'):.3g} "
            f"| x{ref.end_to_end / r.end_to_end:.3g} / x{paired_ratio(ref, r, 'end_to_end'):.3g} |"
        )
    return "\n".join(lines)


def target_line(rows: list[Row], device: torch.device) -> str:
    """The H100 target (ViT-B/14 >= 5,000 tiles/s end to end) as a ratio, on CUDA only."""
    name, target = GPU_TARGET
    row = next((r for r in rows if r.model == name), None)
    if row is None:
        return f"GPU target: {name} not in this run."
    if device.type != "cuda":
        return f"GPU target ({name} >= {target:,.0f} tiles/s end to end on an H100): not applicable on CPU."
    return (f"GPU target: {name} end to end {row.end_to_end:,.0f} tiles/s = {row.end_to_end / target:.2f} x "
            f"the H100 target of {target:,.0f} tiles/s (model only {row.model_only:,.0f}, loader {row.loader_only:,.0f}).")  # fmt: skip


def write_outputs(out: Path, result: dict, md: str) -> None:
    """``embed.json`` (everything), ``embed.csv`` (one row per model) and ``embed.md`` (the printed table)."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "embed.json").write_text(json.dumps(result, indent=2))
    with (out / "embed.csv").open("w", newline="") as fh:
        cols = [k for k in result["rows"][0] if k != "rounds"]
        w = csv.DictWriter(fh, fieldnames=cols, extrasaction="ignore")
        w.writeheader()
        w.writerows(result["rows"])
    (out / "embed.md").write_text(md + "\n")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--slide", type=Path, default=DEFAULT_SLIDE, help="a real slide (default: CMU-1-Small-Region)"
    )
    p.add_argument("--mpp-override", type=float, default=None, help="um/px for a slide without MPP")
    p.add_argument("--models", default=",".join(MODELS),
                   help="comma list: registry names or checkpoint folders; the first is the speed-up reference")  # fmt: skip
    p.add_argument("--device", default="cpu", help="cpu | cuda (bf16 autocast, larger batches)")
    p.add_argument("--tiles", type=int, default=None, help="tiles timed per model (default: per model)")
    p.add_argument("--batch-size", type=int, default=None, help="batch size (default: per model and device)")
    p.add_argument(
        "--repeats", type=int, default=None, help="timing rounds per model, best kept (default: per model)"
    )
    p.add_argument("--num-workers", type=int, default=None,
                   help="iter_embeddings reading threads (default 2 on CPU, CPU cores - 2 on CUDA)")  # fmt: skip
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    p.add_argument("--matmul-n", type=int, default=None, help="matmul side (default 4096 CPU, 8192 GPU)")
    p.add_argument("--quick", action="store_true", help="smoke run: few tiles, ViT-g/14 left out")
    p.add_argument("--out", type=Path, default=ROOT / "outputs" / "benchmarks" / "embed",
                   help="folder for embed.json/csv/md (outputs/ is git-ignored)")  # fmt: skip
    return p.parse_args(argv)


def settings(name: str, args: argparse.Namespace, device: torch.device) -> tuple[int, int, int]:
    """(tiles, batch, repeats) for a model: per-model defaults by device, ``--quick``, or the explicit flags."""
    col = 2 if args.quick else int(device.type == "cuda")
    tiles = args.tiles or TILES.get(name, DEFAULT_TILES)[col]
    batch = args.batch_size or BATCH.get(name, DEFAULT_BATCH)[min(col, 1)]
    repeats = args.repeats or REPEATS.get(name, DEFAULT_REPEATS)[col]
    return tiles, min(batch, tiles), repeats


def prepare_jobs(names: list[str], args: argparse.Namespace, device: torch.device) -> tuple[list[Job], dict]:
    """Build every model, its slide grid (once per tile size / um/px), FLOP count and warm-up."""
    grids: dict = {}
    jobs = []
    for name in names:
        t0 = time.perf_counter()
        model = build_model(name, device)
        key = (model.spec.tile_px, model.spec.mpp)
        if key not in grids:
            grids[key] = tile_grid(args.slide, *key, args.mpp_override)
        tiles, batch, repeats = settings(name, args, device)
        jobs.append(prepare(model, label(name, model.spec), args.slide, grids[key][0], tiles, batch, repeats))
        print(f"{name}: built and warmed up in {time.perf_counter() - t0:.1f} s; {tiles} tiles, batch {batch}, "
              f"{repeats} round(s)", flush=True)  # fmt: skip
    return jobs, grids


def short_slide_notes(jobs: list[Job], slide: Path) -> list[str]:
    """Warn when the slide has fewer tissue tiles than 4 batches: every pass then restarts the reading
    pipeline (first batch read while the device waits), which under-states a long slide's end to end."""
    notes = []
    for job in jobs:
        if len(job.grid) < 4 * job.row.batch and job.row.n_tiles > len(job.grid):
            notes.append(f"{job.row.label}: {slide.name} has {len(job.grid)} tissue tiles, fewer than 4 batches of "
                         f"{job.row.batch}; end to end restarts reading every pass (pass a large slide with --slide)")  # fmt: skip
    for n in notes:
        print("note: " + n, flush=True)
    return notes


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    names = [n for n in args.models.split(",") if n and not (args.quick and n == "h-optimus-0")]
    info = machine(device)
    print("machine: " + ", ".join(f"{k}={v}" for k, v in info.items()), flush=True)
    jobs, grids = prepare_jobs(names, args, device)
    if args.num_workers is None:
        args.num_workers = max(2, (os.cpu_count() or 4) - 2) if device.type == "cuda" else 2
    notes = short_slide_notes(jobs, args.slide)
    peak = bench_all(jobs, args.slide, args.num_workers, device, args.matmul_n)
    rows = [j.row for j in jobs]
    info["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    grid_note = "; ".join(f"{len(g)} tissue tiles of {k[0]} px at {k[1]} um/px, tissue detection + tiling {t:.1f} s"
                          for k, (g, t) in grids.items())  # fmt: skip
    md = table(rows, peak)
    kind = "bf16" if device.type == "cuda" else "fp32"
    print(f"\nslide {args.slide.name}: {grid_note} (once per slide, not in the tiles/s)")
    print(f"matmul peak ({kind}, best of the rounds): {peak / 1e9:,.1f} GFLOP/s; load average before "
          f"{info['load_average_1_5_15min']}, after {info['load_average_after']}\n\n{md}\n\n{target_line(rows, device)}")  # fmt: skip
    result = {"machine": info, "slide": str(args.slide), "grid": grid_note, "matmul_flops": peak,
              "matmul_dtype": kind, "target": target_line(rows, device), "notes": notes,
              "num_workers": args.num_workers,
              "rows": [dataclasses.asdict(r) | {"bound": r.bound, "fraction_model_only": r.fraction(peak),
                       "fraction_end_to_end": r.fraction(peak, "end_to_end"),
                       "reference_speedup_model_only_paired": paired_ratio(rows[0], r, "model_only"),
                       "reference_speedup_end_to_end_paired": paired_ratio(rows[0], r, "end_to_end")}
                       for r in rows]}  # fmt: skip
    if args.out:
        write_outputs(args.out, result, md)
        print(f"wrote {args.out}/embed.json, embed.csv, embed.md")
    return result


if __name__ == "__main__":
    main()
