"""``pathdistill eval``: robustness (PLISM metrics), probes, regression, concordance, teacher-vs-student report
and the offline stand-in robustness benchmark. Every long step shows a tqdm progress bar.

This module registers the tasks and runs the tile ones (probe, concordance, compare); the robustness ones are in
:mod:`~napari_pathdistill.cli.eval_robustness`, regression in :mod:`~napari_pathdistill.cli.eval_regression`.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from napari_pathdistill.cli._bars import drive
from napari_pathdistill.errors import PathDistillError

if TYPE_CHECKING:
    from napari_pathdistill.evaluation.probes import ProbeResult


def _dump(obj, path: Path) -> None:
    from napari_pathdistill.evaluation.report import write_json

    print(f"wrote {write_json(path, obj)}")


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
    from napari_pathdistill.evaluation.probes import check_folds, knn_probe, linear_probe

    groups, col = tile_groups(args.tiles)  # checked before the model loads
    labels = list_labelled_tiles(args.tiles)[1]
    check_probe_labels(args.tiles, labels, groups)
    check_folds(labels, n_splits=args.n_splits, seed=args.seed, groups=groups)
    if groups is None:
        print(
            "note: tile-level StratifiedKFold: tiles of one slide/patient fall in both train and test folds; "
            "give a patient (or slide/group) column in the path,label CSV for patient-level folds",
            file=sys.stderr,
        )
    feats, labels = _features_and_labels(args)
    cv = {"n_splits": args.n_splits, "seed": args.seed, "groups": groups}
    splits, out = f"{col} (StratifiedGroupKFold)" if groups is not None else "tile", {}
    probes = (("linear", lambda step: linear_probe(feats, labels, progress=step, **cv)),
              ("knn", lambda step: knn_probe(feats, labels, k=args.knn_k, progress=step, **cv)))  # fmt: skip
    for res in (_with_fold_bar(name, run, args.n_splits) for name, run in probes):
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


def _with_fold_bar(
    name: str, run: Callable[[Callable[[float], None]], ProbeResult], folds: int
) -> ProbeResult:
    """``run(step)`` with a bar of its folds: a probe's fit over 100,000 tiles takes minutes per fold."""
    from napari_pathdistill.cli._bars import progress_bar

    with progress_bar(desc=f"{name} probe", total=folds, unit="fold") as bar:
        return run(lambda fraction: bar.update(round(fraction * folds) - bar.n))


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
        # `eval offline-benchmark --out DIR` writes DIR/metrics/summary.json and `--metrics-dir DIR`
        # DIR/<n>_tiles/<extractor>/summary.json: one summary below the folder is the one meant
        found = sorted(given.glob("*/summary.json")) + sorted(given.glob("*/*/summary.json"))
        if len(found) != 1:
            also = f"; below it: {', '.join(map(str, found))}: give one of those folders" if found else ""
            raise PathDistillError(
                f"{flag} {folder}: no summary.json there; give the --out folder of `pathdistill eval robustness`"
                + also
            )
        path = found[0]
        print(f"{flag}: reading {path}")
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
    # each model at its own tile px, as the Evaluate widget's run (a fixed-size ViT takes no other)
    px = student.spec.tile_px
    student_tiles = None if px == teacher.spec.tile_px else np.stack([load_tile(p, px) for p in paths])
    gen = iter_compare(
        teacher,
        student,
        tiles,
        attention=attention_maps,
        robustness=rob,
        batch_size=args.batch_size,
        names=(args.teacher, args.student),
        student_tiles=student_tiles,
    )
    rep = drive(gen, "compare")
    for metric, value in rep.summary.items():
        print(f"{metric:45s} {value:.4f}")
    for p in rep.save(args.out).values():
        print(f"wrote {p}")
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
    from napari_pathdistill.cli.eval_robustness import cmd_offline, cmd_plism_extract, cmd_robustness

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
