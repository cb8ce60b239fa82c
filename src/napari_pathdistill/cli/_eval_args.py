"""Argument definitions of ``pathdistill eval`` sub-commands (kept apart from their handlers)."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from napari_pathdistill.cli._argtypes import int_at_least, non_negative_float, positive_int


def _common(p: argparse.ArgumentParser, out: str) -> None:
    p.add_argument("--out", default=out, help=f"output folder (default {out})")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda")


def _cv(p: argparse.ArgumentParser) -> None:
    p.add_argument("--n-splits", type=int_at_least(2), default=5, help="cross-validation folds (default 5)")
    p.add_argument("--seed", type=int, default=0, help="random seed of splits and models (default 0)")


def _top_k(text: str) -> list[int]:
    """``--top-k 1 3 5 10`` or plismbench's quoted ``--top-k "1 3 5 10"``."""
    try:
        ks = [int(v) for v in text.replace(",", " ").split()]
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"top-k values must be integers: {text!r}") from err
    if any(k < 1 for k in ks):
        raise argparse.ArgumentTypeError(f"top-k values must be >= 1: {text!r}")
    return ks


def _robustness(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument(
        "--manifest",
        help="CSV with slide,stain,scanner,path[,tissue] (features .h5, or plismbench (N, 3 + D) .npy)",
    )
    src.add_argument(
        "--plism-dir",
        help="folder that directly holds <stain>_<scanner>_to_GMH_S60.tif/features.npy slide folders "
        "(= plismbench's <features-dir>/<extractor>)",
    )
    src.add_argument(
        "--features-dir",
        help="plismbench's --features-dir: slide folders are in <features-dir>/<extractor>/; writes "
        "plismbench's metrics.csv and results.csv under <metrics-dir>/<n_tiles>_tiles/<extractor>/",
    )
    p.add_argument("--extractor", help="with --features-dir: the extractor folder name (plismbench's)")
    p.add_argument("--metrics-dir", help="with --features-dir: plismbench's --metrics-dir (default --out)")
    p.add_argument(
        "--n-tiles",
        type=positive_int,
        help="plismbench tile subset: 460, 2713, 5426, 8139 or 16278 (default 8139 when slides have PLISM's "
        "16,278 tiles, else every tile)",
    )
    p.add_argument("--tile-subset", help="instead of --n-tiles: your own .npy of tile indices")
    p.add_argument(
        "--top-k", "--k", dest="k", type=_top_k, nargs="+", default=[[1, 3, 5, 10]],
        help='top-k values: 1 3 5 10 or "1 3 5 10" (default; the leaderboard needs 10)',
    )  # fmt: skip
    p.add_argument(
        "--mixed-precision",
        action="store_true",
        help="reproduce plismbench's float16 numpy computation exactly (slow on CPU); default float32",
    )
    p.add_argument(
        "--workers", type=positive_int, help="CPU threads for the matmuls (plismbench's --workers)"
    )
    p.add_argument("--overwrite", action="store_true", help="recompute pairs already saved (default: resume)")
    p.add_argument(
        "--block",
        type=positive_int,
        default=2048,
        help="queries per matmul block (memory ~ 2*block*n floats)",
    )
    _common(p, "robustness")


def _plism_extract(p: argparse.ArgumentParser) -> None:
    p.add_argument("--plism-dir", required=True, help="folder of PLISM's *_to_GMH_S60.tif.h5 tile files")
    p.add_argument("--model", required=True, help="registry name, checkpoint folder or hf-hub id")
    p.add_argument(
        "--export-dir", required=True, help="plismbench's --export-dir (features go to <dir>/<extractor>)"
    )
    p.add_argument("--extractor", help="extractor folder name (default: the model's name)")
    p.add_argument("--batch-size", type=positive_int, default=32, help="tiles per forward pass (default 32)")
    p.add_argument(
        "--overwrite", action="store_true", help="re-extract slides already written (default: skip)"
    )
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda")


def add_all(ev, handlers: dict[str, Callable], wrap: Callable) -> None:
    """Add every sub-command to ``ev`` with its handler wrapped by ``wrap``."""
    _robustness(
        ev.add_parser("robustness", help="PLISM robustness metrics (plismbench evaluate, reproduced)")
    )
    _plism_extract(ev.add_parser("plism-extract", help="PLISM tile .h5 files -> plismbench features.npy"))

    p = ev.add_parser(
        "probe", help="linear (logistic regression) and kNN probes, balanced accuracy, stratified CV"
    )
    p.add_argument(
        "--tiles", required=True, help="folder of class folders, flat histolab folder, or path,label CSV"
    )
    p.add_argument("--model", required=True, help="registry name, checkpoint folder or hf-hub id")
    p.add_argument(
        "--knn-k", type=positive_int, default=20,
        help="neighbours of the kNN probe (default 20; capped at the smallest class of a training fold)",
    )  # fmt: skip
    p.add_argument("--batch-size", type=positive_int, default=16, help="tiles per forward pass (default 16)")
    _cv(p)
    _common(p, "probe")

    p = ev.add_parser("regression", help="HEST-bench PCA(256) + ridge, Pearson r per target")
    p.add_argument("--features", required=True, help="(N, D) features: .npy, .h5 or .csv with a header")
    p.add_argument(
        "--targets", required=True,
        help="(N, T) targets: .npy or .csv with a header (a group/patient column holds the group ids)",
    )  # fmt: skip
    p.add_argument(
        "--groups", help="one group (patient/slide) id per row (.npy, or a text/CSV file): GroupKFold folds"
    )
    p.add_argument(
        "--components", type=positive_int, default=256, help="PCA components (capped at min(n, D))"
    )
    p.add_argument(
        "--alpha", type=non_negative_float, default=None,
        help="ridge strength >= 0 (default HEST's 100 / (components x targets))",
    )  # fmt: skip
    _cv(p)
    _common(p, "regression")

    p = ev.add_parser("concordance", help="BreastBm protocol: mean pooling + logistic regression, Lin's CCC")
    p.add_argument(
        "--slides",
        required=True,
        help="CSV with block,condition,label,path (features .h5, or plismbench (N, 3 + D) .npy)",
    )
    p.add_argument("--train-condition", required=True, help="condition whose slides train the classifier")
    p.add_argument(
        "--seed", type=int, default=0, help="seed of the block folds and the classifier (default 0)"
    )
    _common(p, "concordance")

    p = ev.add_parser(
        "compare", help="teacher vs student: CKA, attention agreement, speed ratio (+ robustness)"
    )
    p.add_argument("--teacher", required=True, help="registry name, checkpoint folder or hf-hub: id")
    p.add_argument("--student", required=True, help="registry name, checkpoint folder or hf-hub: id")
    p.add_argument("--tiles", required=True, help="folder (or path,label CSV) of tile images")
    p.add_argument(
        "--max-tiles", type=int_at_least(2), default=256, help="compare the first N tiles (default 256)"
    )
    p.add_argument("--batch-size", type=positive_int, default=16, help="tiles per forward pass (default 16)")
    p.add_argument("--teacher-robustness", help="output folder of `eval robustness` for the teacher")
    p.add_argument("--student-robustness", help="output folder of `eval robustness` for the student")
    _common(p, "compare")

    p = ev.add_parser("offline-benchmark", help="build + score the offline stand-in for PLISM (see docs)")
    p.add_argument("--model", required=True, help="registry name, checkpoint folder or hf-hub: id")
    p.add_argument("--data", default="../shared/data", help="shared data root (default ../shared/data)")
    p.add_argument(
        "--max-tiles", type=int_at_least(2), default=64, help="matched tiles per tissue (default 64)"
    )
    _common(p, "offline-benchmark")

    for name, sp in ev.choices.items():
        sp.set_defaults(func=wrap(handlers[name]))
