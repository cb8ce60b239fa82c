"""``pathdistill eval robustness`` (PLISM metrics from features or plismbench folders), ``eval plism-extract``
and ``eval offline-benchmark`` (the offline stand-in for PLISM)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from napari_pathdistill.cli._bars import drive
from napari_pathdistill.errors import PathDistillError


def _ks(args: argparse.Namespace) -> list[int]:
    ks = sorted({k for group in args.k for k in group})
    if not ks:
        raise PathDistillError("--top-k needs at least one value")
    return ks


def _robustness_options(args: argparse.Namespace) -> dict:
    import torch

    if args.workers:
        torch.set_num_threads(args.workers)
    device = "cuda" if args.device == "gpu" else args.device  # plismbench says gpu
    return {"device": device, "block": args.block, "mixed_precision": args.mixed_precision}


def _report(res, out_files: list[Path]) -> None:
    _print_summary(res.summary)
    print("\n".join([res.leaderboard_line(), *res.topk_notes()]))
    print(f"{res.timing_line()}; wrote " + ", ".join(str(p) for p in out_files))


def cmd_robustness(args: argparse.Namespace) -> int:
    from napari_pathdistill.evaluation.features_io import discover_plism, load_tile_subset, npy_rows
    from napari_pathdistill.evaluation.manifest import read_manifest
    from napari_pathdistill.evaluation.plism import iter_robustness
    from napari_pathdistill.evaluation.plismbench_files import PairStore, tile_subset
    from napari_pathdistill.evaluation.plismbench_run import iter_plismbench_evaluate

    opts, ks = _robustness_options(args), _ks(args)
    if args.features_dir:
        if not args.extractor:
            raise PathDistillError(
                "--features-dir needs --extractor (the folder under it holding the slides)"
            )
        metrics_dir = Path(args.metrics_dir or args.out)
        gen = iter_plismbench_evaluate(
            args.features_dir, args.extractor, metrics_dir, n_tiles=args.n_tiles, ks=ks,
            overwrite=args.overwrite, **opts,
        )  # fmt: skip
        out = _drive_resumable(gen, lambda: _plismbench_pairs(metrics_dir, args.extractor))
        _report(out.result, list(out.files))
        if out.note:
            print(f"note: {out.note}", file=sys.stderr)
        return 0
    subset = load_tile_subset(args.tile_subset)
    entries = discover_plism(args.plism_dir) if args.plism_dir else read_manifest(args.manifest)
    if subset is None and entries[0].path is not None and Path(entries[0].path).suffix == ".npy":
        subset = tile_subset(args.n_tiles, npy_rows(entries[0].path))
    elif args.n_tiles is not None and subset is None:
        raise PathDistillError(
            "--n-tiles applies to plismbench features.npy; use --tile-subset for .h5 features"
        )
    store = PairStore(Path(args.out), overwrite=args.overwrite)  # <out>/pairs/: an interrupted run resumes
    res = _drive_resumable(
        iter_robustness(entries, ks, subset=subset, store=store, **opts), lambda: store.dir
    )
    _report(res, list(res.save(args.out)))
    return 0


def _plismbench_pairs(metrics_dir: Path, extractor: str) -> Path | None:
    """The ``<metrics-dir>/<n>_tiles/<extractor>/pairs`` folder a ``--features-dir`` run writes (the newest)."""
    found = metrics_dir.glob(f"*_tiles/{extractor}/pairs")
    return max(found, key=lambda p: p.stat().st_mtime_ns, default=None)


def _drive_resumable(gen, pairs_dir: Callable[[], Path | None]):
    """``drive(gen)``; on Ctrl-C (or SIGTERM) first says where the finished pairs are and that a rerun resumes."""
    try:
        return drive(gen, "robustness")
    except KeyboardInterrupt:
        folder = pairs_dir()
        if folder is not None and folder.is_dir():
            n = sum(1 for _ in folder.glob("*.json"))
            print(
                f"stopping: {n} finished pair(s) are kept in {folder}; run the same command again to resume "
                "(pairs.csv and summary.json are written when every pair is done)",
                file=sys.stderr,
            )
        raise


def cmd_plism_extract(args: argparse.Namespace) -> int:
    from napari_pathdistill.evaluation.plism_extract import iter_plism_extract
    from napari_pathdistill.models import load_model

    model = load_model(args.model, args.device)
    root = Path(args.export_dir) / (args.extractor or model.spec.name)
    before = {p: p.stat().st_mtime_ns for p in root.glob("*/features.npy")}  # what a resume keeps
    gen = iter_plism_extract(
        args.plism_dir, model, args.export_dir, extractor=args.extractor, batch_size=args.batch_size,
        overwrite=args.overwrite,
    )  # fmt: skip
    paths = drive(gen, "plism-extract")
    written = sum(before.get(p) != p.stat().st_mtime_ns for p in paths)
    kept = f", kept {len(paths) - written} already extracted by this model" if written < len(paths) else ""
    print(f"wrote {written} features.npy{kept} under {root}")
    return 0


def _print_summary(summary: dict) -> None:
    for group, metrics in summary.items():
        vals = "  ".join(f"{m}={v['median']:.3f} ({v['iqr']:.3f})" for m, v in metrics.items())
        print(f"{group:15s} n={next(iter(metrics.values()))['n_pairs']:<5d} {vals}")


def cmd_offline(args: argparse.Namespace) -> int:
    from napari_pathdistill.evaluation.manifest import read_manifest
    from napari_pathdistill.evaluation.offline_benchmark import iter_build_benchmark
    from napari_pathdistill.evaluation.plism import iter_robustness
    from napari_pathdistill.models import load_model

    model = load_model(args.model, args.device)
    gen = iter_build_benchmark(
        args.out,
        model.embed,
        args.data,
        tile_px=model.spec.tile_px,
        mpp=model.spec.mpp,
        max_tiles=args.max_tiles,
        stamp={"model": model.spec.name, "weights": model.weights_id},
    )
    manifest = drive(gen, "building benchmark")
    res = drive(iter_robustness(read_manifest(manifest), device=args.device), "robustness")
    res.save(Path(args.out) / "metrics")
    _print_summary(res.summary)
    print("\n".join([res.leaderboard_line() + "  [offline stand-in, NOT PLISM]", *res.topk_notes()]))
    return 0
