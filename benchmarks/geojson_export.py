"""Benchmark: QuPath GeoJSON of a whole slide's tiles (issue 12, item 6), as "Export GeoJSON" writes it.

A clusters export is every tile of the map: 10k-100k Features. Side by side in one run, for ``--n`` random tiles
in 6 clusters (and a similarity export with a cosine measurement per tile): building each Feature as nested
dicts and ``json.dumps`` of the whole (the export until 2026-12-07, still what ``col["features"]`` builds), vs
``TileCollection.text()`` (per-class property strings, each tile's numbers formatted in). Both give the same
text (asserted). Run from the repository root::

    python benchmarks/geojson_export.py [--n 100000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np

from napari_pathdistill.inference.qupath import clusters_geojson, similarity_collection


def _best(fn, repeats: int) -> tuple[float, str]:
    times, out = [], ""
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return min(times), out


def main(argv: list[str] | None = None) -> dict[str, float]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=100_000)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)
    rng = np.random.default_rng(0)
    coords = rng.integers(0, 100_000, (args.n, 2))
    labels, cosine = rng.integers(1, 7, args.n), rng.uniform(-1, 1, args.n)
    exports = {
        "clusters": lambda: clusters_geojson(coords, 448.0, labels),
        "similar (threshold -1: all)": lambda: similarity_collection(
            coords, 448.0, cosine, query=0, threshold=-1.0
        ),
    }
    ratios = {}
    print(
        f"{args.n:,} tiles; best of {args.repeats}; load average {' '.join(f'{v:.2f}' for v in os.getloadavg())}"
    )
    for name, make in exports.items():
        col = make()
        old, old_text = _best(lambda c=col: json.dumps({"type": "FeatureCollection", "features": list(
            c._feature_dicts())}), args.repeats)  # fmt: skip
        new, new_text = _best(lambda m=make: m().text(), args.repeats)
        assert new_text == old_text
        ratios[name] = old / new
        print(f"  {name:28s} dicts + json.dumps {old:6.2f} s   text() {new:6.2f} s   {old / new:5.1f}x  "
              f"({len(new_text) / 1e6:.1f} MB)")  # fmt: skip
    return ratios


if __name__ == "__main__":
    main()
