"""``pathdistill eval``: robustness (PLISM metrics), probes, regression, concordance, teacher-vs-student report
and the offline stand-in robustness benchmark. Every long step shows a tqdm progress bar.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from pathlib import Path

from napari_pathdistill.errors import PathDistillError


def drive(gen: Iterator, desc: str):
    """Consume a core generator, showing its ``Progress`` items with tqdm; returns the last non-progress item."""
    from napari_pathdistill.cli._bars import advance, progress_bar
    from napari_pathdistill.progress import drain

    with progress_bar(desc=desc, unit="step") as bar:
        return drain(gen, lambda item: advance(bar, item.done, item.total, item.stage))


def _dump(obj, path: Path) -> None:
    from napari_pathdistill.evaluation.report import write_json

    print(f"wrote {write_json(path, obj)}")


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
    from napari_pathdistill.evaluation.features_io import discover_plism, load_tile_subset
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
        gen = iter_plismbench_evaluate(
            args.features_dir, args.extractor, args.metrics_dir or args.out, n_tiles=args.n_tiles, ks=ks,
            overwrite=args.overwrite, **opts,
        )  # fmt: skip
        out = drive(gen, "robustness")
        _report(out.result, list(out.files))
        if out.note:
            print(f"note: {out.note}", file=sys.stderr)
        return 0
    subset = load_tile_subset(args.tile_subset)
    entries = discover_plism(args.plism_dir) if args.plism_dir else read_manifest(args.manifest)
    if subset is None and entries[0].path is not None and Path(entries[0].path).suffix == ".npy":
        import numpy as np

        subset = tile_subset(args.n_tiles, np.load(entries[0].path, mmap_mode="r").shape[0])
    elif args.n_tiles is not None and subset is None:
        raise PathDistillError(
            "--n-tiles applies to plismbench features.npy; use --tile-subset for .h5 features"
        )
    store = PairStore(Path(args.out), overwrite=args.overwrite)  # <out>/pairs/: an interrupted run resumes
    res = drive(iter_robustness(entries, ks, subset=subset, store=store, **opts), "robustness")
    _report(res, list(res.save(args.out)))
    return 0


def cmd_plism_extract(args: argparse.Namespace) -> int:
    from napari_pathdistill.evaluation.plism_extract import iter_plism_extract
    from napari_pathdistill.models import load_model

    model = load_model(args.model, args.device)
    gen = iter_plism_extract(
        args.plism_dir, model, args.export_dir, extractor=args.extractor, batch_size=args.batch_size,
        overwrite=args.overwrite,
    )  # fmt: skip
    paths = drive(gen, "plism-extract")
    print(
        f"wrote {len(paths)} features.npy under {Path(args.export_dir) / (args.extractor or model.spec.name)}"
    )
    return 0


def _print_summary(summary: dict) -> None:
    for group, metrics in summary.items():
        vals = "  ".join(f"{m}={v['median']:.3f} ({v['iqr']:.3f})" for m, v in metrics.items())
        print(f"{group:15s} n={next(iter(metrics.values()))['n_pairs']:<5d} {vals}")


def _features_and_labels(args: argparse.Namespace):
    import numpy as np

    from napari_pathdistill.evaluation.labelled_tiles import iter_embed_tiles, list_labelled_tiles
    from napari_pathdistill.models import load_model

    paths, labels = list_labelled_tiles(args.tiles)
    model = load_model(args.model, args.device)
    feats = drive(iter_embed_tiles(model, paths, batch_size=args.batch_size), "embedding")
    return np.asarray(feats), labels


def cmd_probe(args: argparse.Namespace) -> int:
    from napari_pathdistill.evaluation.labelled_tiles import (
        check_probe_labels,
        list_labelled_tiles,
        tile_groups,
    )
    from napari_pathdistill.evaluation.probes import knn_probe, linear_probe

    groups, col = tile_groups(args.tiles)  # checked before the model loads
    check_probe_labels(args.tiles, list_labelled_tiles(args.tiles)[1], groups)
    if groups is None:
        print(
            "note: tile-level StratifiedKFold: tiles of one slide/patient fall in both train and test folds; "
            "give a patient (or slide/group) column in the path,label CSV for patient-level folds",
            file=sys.stderr,
        )
    feats, labels = _features_and_labels(args)
    cv = {"n_splits": args.n_splits, "seed": args.seed, "groups": groups}
    splits, out = f"{col} (StratifiedGroupKFold)" if groups is not None else "tile", {}
    for res in (linear_probe(feats, labels, **cv), knn_probe(feats, labels, k=args.knn_k, **cv)):
        out[res.name] = {
            "balanced_accuracy_mean": res.mean,
            "std": res.std,
            "folds": res.fold_scores.tolist(),
            "splits": splits,
        }
        if res.k is not None:  # the kNN probe: the k it used, and the one asked for
            out[res.name] |= {"k": res.k, "k_requested": args.knn_k}
        print(
            f"{res.name:7s} balanced accuracy {res.mean:.3f} +- {res.std:.3f} ({args.n_splits}-fold"
            f"{f' by {col}' if groups is not None else ''}, "
            f"seed {args.seed}{_k_note(res.k, args.knn_k)})"
        )
    _dump(out, Path(args.out) / "probe.json")
    return 0


def _k_note(k_used: int | None, k_asked: int) -> str:
    """``, k=5`` for the kNN probe, saying so when ``--knn-k`` was capped; empty for the linear probe."""
    if k_used is None:
        return ""
    if k_used == k_asked:
        return f", k={k_used}"
    return (
        f", k={k_used}: --knn-k {k_asked} capped at the smallest class's tiles in a training fold, "
        "so that class can still win a vote"
    )


def cmd_concordance(args: argparse.Namespace) -> int:
    from napari_pathdistill.evaluation.concordance import breastbm_ccc, positive_class, read_slides_csv

    slides = read_slides_csv(args.slides)
    labels = [s["label"] for s in slides]
    ccc = breastbm_ccc(slides, args.train_condition, seed=args.seed)
    print(
        f"CCC of the predicted P(label = {positive_class(labels)}) across conditions (each block predicted by a "
        f"classifier fitted on the other {args.train_condition!r} blocks)"
    )
    for k, v in ccc.items():
        print(f"CCC {k}: {v:.3f}")
    _dump(ccc, Path(args.out) / "concordance.json")
    return 0


def _robustness_medians(flag: str, folder: str) -> dict[str, float]:
    """Robustness medians of an ``eval robustness`` output folder (or its ``summary.json``), checked."""
    from napari_pathdistill.evaluation.compare import robustness_medians

    given = Path(folder)
    path = given if given.is_file() else given / "summary.json"
    if not path.is_file():
        raise PathDistillError(
            f"{flag} {folder}: no summary.json there; give the --out folder of `pathdistill eval robustness`"
        )
    try:
        return robustness_medians(json.loads(path.read_text())["summary"])
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise PathDistillError(
            f"{flag} {path}: not a summary.json written by `pathdistill eval robustness` ({err!r})"
        ) from None


def _compare_inputs(args: argparse.Namespace) -> tuple[list[Path], dict[str, dict[str, float]]]:
    """The tile paths (at most ``--max-tiles``) and robustness medians, checked before any model loads."""
    from napari_pathdistill.errors import EvaluationError
    from napari_pathdistill.evaluation.labelled_tiles import list_labelled_tiles

    rob = {
        name: _robustness_medians(f"--{name}-robustness", folder)
        for name, folder in (("teacher", args.teacher_robustness), ("student", args.student_robustness))
        if folder
    }
    paths, _ = list_labelled_tiles(args.tiles, label_from_name=lambda p: "")
    if len(paths) < 2:
        raise EvaluationError(f"{args.tiles}: the teacher-vs-student report needs at least 2 tiles")
    return paths[: args.max_tiles], rob


def cmd_compare(args: argparse.Namespace) -> int:
    import numpy as np

    from napari_pathdistill.evaluation.compare import iter_compare
    from napari_pathdistill.evaluation.labelled_tiles import load_tile
    from napari_pathdistill.inference.attention import attention_maps
    from napari_pathdistill.models import load_model

    paths, rob = _compare_inputs(args)
    teacher, student = load_model(args.teacher, args.device), load_model(args.student, args.device)
    tiles = np.stack([load_tile(p, teacher.spec.tile_px) for p in paths])
    gen = iter_compare(
        teacher,
        student,
        tiles,
        attention=attention_maps,
        robustness=rob,
        batch_size=args.batch_size,
        names=(args.teacher, args.student),
    )
    rep = drive(gen, "compare")
    for metric, value in rep.summary.items():
        print(f"{metric:45s} {value:.4f}")
    for p in rep.save(args.out).values():
        print(f"wrote {p}")
    return 0


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
    )
    manifest = drive(gen, "building benchmark")
    res = drive(iter_robustness(read_manifest(manifest), device=args.device), "robustness")
    res.save(Path(args.out) / "metrics")
    _print_summary(res.summary)
    print("\n".join([res.leaderboard_line() + "  [offline stand-in, NOT PLISM]", *res.topk_notes()]))
    return 0


def _run(func):
    def wrapper(args: argparse.Namespace) -> int:
        try:
            return func(args)
        except (PathDistillError, OSError) as err:  # OSError: an unreadable input or unwritable --out
            print(f"error: {err}", file=sys.stderr)
            return 1

    return wrapper


def add_parser(sub) -> None:
    """Register ``eval`` and its sub-commands."""
    p = sub.add_parser("eval", help="evaluate models: robustness, probes, concordance, teacher vs student")
    ev = p.add_subparsers(dest="eval_command", metavar="TASK", required=True)
    from napari_pathdistill.cli._eval_args import add_all
    from napari_pathdistill.cli.eval_regression import cmd_regression

    add_all(
        ev,
        {
            "robustness": cmd_robustness,
            "plism-extract": cmd_plism_extract,
            "probe": cmd_probe,
            "regression": cmd_regression,
            "concordance": cmd_concordance,
            "compare": cmd_compare,
            "offline-benchmark": cmd_offline,
        },
        _run,
    )
