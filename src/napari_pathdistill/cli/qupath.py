"""``pathdistill qupath FEATURES.h5 --out tiles.geojson``: tile clusters or similar tiles as QuPath objects.

``--clusters K`` exports k-means clusters (classes ``cluster 1..K``); ``--similar-to X,Y`` (a level-0 point, or
``--query ROW``) exports the query tile and its ``--top-k`` most similar tiles, or every tile with cosine >=
``--threshold``. Import the file in QuPath with File > Import objects (tiles are detections by default).
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path
from types import ModuleType
from typing import Any

from napari_pathdistill.cli._argtypes import checked_float, non_negative_int, positive_int
from napari_pathdistill.errors import PathDistillError

#: similar tiles kept when neither --top-k nor --threshold is given
DEFAULT_TOP_K = 20


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``qupath``."""
    p = subparsers.add_parser("qupath", help="clusters / similar tiles of an embedding .h5 -> QuPath GeoJSON")
    p.add_argument("features", type=Path, help="embedding HDF5 (pathdistill embed, CLAM or TRIDENT layout)")
    p.add_argument("--out", type=Path, required=True, help="output .geojson")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument(
        "--clusters",
        type=positive_int,
        metavar="K",
        help="export k-means clusters of the tiles (1 <= K <= tiles)",
    )
    what.add_argument("--similar-to", metavar="X,Y", help="query tile: the one containing level-0 point X,Y")
    what.add_argument(
        "--query", type=non_negative_int, metavar="ROW", help="query tile by its row in the file"
    )
    keep = p.add_mutually_exclusive_group()
    keep.add_argument(
        "--top-k", type=positive_int, default=None, help=f"similar tiles to keep (default {DEFAULT_TOP_K})"
    )
    keep.add_argument(
        "--threshold",
        type=_cosine,
        default=None,
        help="keep every tile with cosine >= this (-1 to 1) instead",
    )
    p.add_argument("--annotations", action="store_true", help="export annotations instead of detections")
    p.add_argument("--seed", type=int, default=0, help="k-means seed")
    p.set_defaults(func=run)


def _cosine(text: str) -> float:
    """A cosine threshold in [-1, 1] (``--threshold 60`` or ``nan`` exported the query tile alone)."""
    return checked_float(text, lambda v: -1 <= v <= 1, "a cosine between -1 and 1")


def run(args: argparse.Namespace) -> int:
    """Write the GeoJSON; 0 on success, 2 for options that do not go together, 1 with a message on bad input."""
    if args.clusters is not None and (args.top_k is not None or args.threshold is not None):
        print("pathdistill qupath: error: --top-k / --threshold select similar tiles; they do not apply to "
              "--clusters", file=sys.stderr)  # fmt: skip
        return 2
    if args.out.is_dir():  # said before the export is computed (the write's error named its temporary file)
        example = args.out / "tiles.geojson"
        print(
            f"error: --out {args.out} is a folder: give the .geojson file to write, e.g. {example}",
            file=sys.stderr,
        )
        return 1
    try:
        collection = _collection(args)
        if args.annotations:
            for feat in collection["features"]:
                feat["properties"]["objectType"] = "annotation"
        out = _core().write_geojson(collection, args.out)
    except (PathDistillError, OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"{out}: {len(collection['features'])} tiles")
    return 0


def _core() -> ModuleType:
    """``inference.qupath``, imported when a command runs (not for ``--help``)."""
    from napari_pathdistill.inference import qupath

    return qupath


def _collection(args: argparse.Namespace) -> dict[str, Any]:
    """The clusters or similar-tiles FeatureCollection asked for; feature-file warnings as ``warning:`` lines."""
    qupath = _core()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if args.clusters is not None:
            collection = qupath.cluster_collection(args.features, args.clusters, seed=args.seed)
        else:
            query = args.query if args.query is not None else _query_row(args.features, args.similar_to)
            top_k = None if args.threshold is not None else (args.top_k or DEFAULT_TOP_K)
            collection = qupath.similar_collection(
                args.features, query, top_k=top_k, threshold=args.threshold
            )
    _show(caught)
    n_similar = len(collection["features"]) - 1
    if args.clusters is None and args.threshold is None and n_similar < (args.top_k or DEFAULT_TOP_K):
        print(f"note: --top-k {args.top_k or DEFAULT_TOP_K}, but the file has only {n_similar} other tiles: "
              "all of them are exported")  # fmt: skip
    return collection


def _show(caught: list[warnings.WarningMessage]) -> None:
    """Our warnings (e.g. NaN feature rows left out) as one ``warning:`` line each; others as Python shows them."""
    shown: set[str] = set()
    for w in caught:
        text = str(w.message)
        if not w.category.__module__.startswith("napari_pathdistill"):
            warnings.showwarning(w.message, w.category, w.filename, w.lineno)
        elif text not in shown:  # --similar-to reads the file twice
            shown.add(text)
            print(f"warning: {text}", file=sys.stderr)


def _query_row(h5: Path, point: str) -> int:
    """Row of the tile containing the level-0 point ``X,Y`` of ``--similar-to``."""
    try:
        x, y = (float(v) for v in point.split(","))
    except ValueError:
        raise ValueError(f"--similar-to takes X,Y in level-0 pixels, got {point!r}") from None
    _, coords, size = _core().read_features(h5)
    return _core().tile_at(coords, size, x, y)
