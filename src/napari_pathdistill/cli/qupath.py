"""``pathdistill qupath FEATURES.h5 --out tiles.geojson``: tile clusters or similar tiles as QuPath objects.

``--clusters K`` exports k-means clusters (classes ``cluster 1..K``); ``--similar-to X,Y`` (a level-0 point, or
``--query ROW``) exports the query tile and its ``--top-k`` most similar tiles, or every tile with cosine >=
``--threshold``. Import the file in QuPath with File > Import objects (tiles are detections by default).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from napari_pathdistill.errors import PathDistillError


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``qupath``."""
    p = subparsers.add_parser("qupath", help="clusters / similar tiles of an embedding .h5 -> QuPath GeoJSON")
    p.add_argument("features", type=Path, help="embedding HDF5 (pathdistill embed, CLAM or TRIDENT layout)")
    p.add_argument("--out", type=Path, required=True, help="output .geojson")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--clusters", type=int, metavar="K", help="export k-means clusters of the tiles")
    what.add_argument("--similar-to", metavar="X,Y", help="query tile: the one containing level-0 point X,Y")
    what.add_argument("--query", type=int, metavar="ROW", help="query tile by its row in the file")
    p.add_argument("--top-k", type=int, default=None, help="similar tiles to keep (default 20)")
    p.add_argument(
        "--threshold", type=float, default=None, help="keep every tile with cosine >= this instead"
    )
    p.add_argument("--annotations", action="store_true", help="export annotations instead of detections")
    p.add_argument("--seed", type=int, default=0, help="k-means seed")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Write the GeoJSON; 0 on success, 1 with a message on bad input."""
    from napari_pathdistill.inference import qupath

    try:
        if args.clusters is not None:
            collection = qupath.cluster_collection(args.features, args.clusters, seed=args.seed)
        else:
            query = args.query if args.query is not None else _query_row(args.features, args.similar_to)
            top_k = None if args.threshold is not None else (args.top_k or 20)
            collection = qupath.similar_collection(
                args.features, query, top_k=top_k, threshold=args.threshold
            )
        if args.annotations:
            for feat in collection["features"]:
                feat["properties"]["objectType"] = "annotation"
        out = qupath.write_geojson(collection, args.out)
    except (PathDistillError, OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"{out}: {len(collection['features'])} tiles")
    return 0


def _query_row(h5: Path, point: str) -> int:
    from napari_pathdistill.inference.qupath import read_features, tile_at

    try:
        x, y = (float(v) for v in point.split(","))
    except ValueError:
        raise ValueError(f"--similar-to takes X,Y in level-0 pixels, got {point!r}") from None
    _, coords, size = read_features(h5)
    return tile_at(coords, size, x, y)
