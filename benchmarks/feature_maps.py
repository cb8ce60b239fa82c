"""Benchmark: PCA colours, k-means clusters and click-similarity on a whole slide's features (issue 12, item 5).

Builds (N, D) float32 features with cluster structure (default 100,000 x 1,536: a large slide embedded with
H0-mini's CLS + mean-patch embedding), then times each call of ``metrics.features`` the Embed widget makes, with
the peak memory it adds (``tracemalloc``: numpy's allocations), side by side with the exact methods
(full SVD, full k-means) on a subsample for the ratio. k-means also runs on features with only weak structure
(cluster centres 0.05 noise sd apart: no strong clusters, where Lloyd to scikit-learn's convergence crawls),
beside the earlier fit (every seeding to convergence, up to 300 iterations), with the inertia ratio. Last, the
features are written as TRIDENT writes them (one row per HDF5 chunk) and read back by h5py and by
``inference.h5_rows.read_rows`` (the feature-file reader's). Run from the repository root::

    python benchmarks/feature_maps.py [--n 100000] [--dim 1536] [--k 8]

Targets: PCA and k-means of 100k x 1536 in < 5 s and < 1 GB each; a click's cosine map well under a second.
"""

from __future__ import annotations

import argparse
import os
import time
import tracemalloc
from collections.abc import Callable

import numpy as np


def features(n: int, dim: int, k: int, seed: int = 0, spread: float = 2.0) -> np.ndarray:
    """(n, dim) float32 rows around k random centres (unit noise; centre sd ``spread``), like tissue classes in
    embedding space (``spread`` 0.05: no strong structure)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((k, dim)).astype(np.float32) * spread
    out = rng.standard_normal((n, dim), dtype=np.float32)
    out += centres[rng.integers(0, k, n)]
    return out


def measure(fn: Callable[[], object], trace: bool = True) -> tuple[float, float]:
    """(seconds, peak MB allocated during the call) of ``fn()``; ``trace=False``: time only (tracemalloc slows
    Python-level callbacks, e.g. one per HDF5 chunk), peak reported as -1."""
    if not trace:
        t0 = time.perf_counter()
        fn()
        return time.perf_counter() - t0, -1.0
    tracemalloc.start()
    t0 = time.perf_counter()
    fn()
    seconds = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    return seconds, peak


def kmeans_to_convergence(x: np.ndarray, k: int, seed: int = 0) -> np.ndarray:
    """The earlier ``kmeans_labels`` of a large input: every seeding refined by Lloyd to scikit-learn's
    convergence (300 iterations at most), the lowest inertia kept, then every row assigned."""
    from napari_pathdistill.metrics import features as F
    from napari_pathdistill.metrics.kmeans import lloyd

    norms = F.row_norms(x)
    rows = F._fit_rows(len(x), F.KMEANS_FIT_ROWS, seed)
    sample = (x if rows is None else x[rows]).astype(np.float32)
    sample /= (norms if rows is None else norms[rows])[:, None].astype(np.float32)
    rng = np.random.default_rng(seed)
    fits = [lloyd(sample, F.kmeans_plusplus_unit(sample, k, rng)) for _ in range(F.KMEANS_INITS)]
    return F.nearest_centre(x, min(fits, key=lambda fit: fit[2])[0], norms) + 1


def inertia(x: np.ndarray, labels: np.ndarray) -> float:
    """k-means inertia of ``labels`` (1..k) on the L2-normalised rows of ``x``, each cluster about its mean."""
    from napari_pathdistill.metrics.features import l2_normalise

    xn = l2_normalise(x, np.float32)
    return sum(float(((xn[labels == j] - xn[labels == j].mean(0)) ** 2).sum()) for j in np.unique(labels))


def h5_reads(x: np.ndarray) -> dict[str, tuple[float, float]]:
    """Times of reading ``x`` back from a TRIDENT-layout HDF5 (chunks (1, D)): h5py's ``[()]``, ``read_rows``."""
    import tempfile

    import h5py

    from napari_pathdistill.inference.h5_rows import read_rows

    with tempfile.TemporaryDirectory() as tmp:
        path = f"{tmp}/trident.h5"
        with h5py.File(path, "w") as f:
            f.create_dataset("features", data=x, maxshape=(None, x.shape[1]), chunks=(1, x.shape[1]))
        with h5py.File(path, "r") as f:
            return {
                "TRIDENT h5 (1-row chunks): h5py dset[()]": measure(lambda: f["features"][()], trace=False),
                "TRIDENT h5 (1-row chunks): read_rows": measure(lambda: read_rows(f["features"]), False),
            }


def main(argv: list[str] | None = None) -> dict[str, tuple[float, float]]:
    from sklearn.cluster import KMeans

    from napari_pathdistill.metrics.features import cosine_to, kmeans_labels, l2_normalise, pca_rgb

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=100_000)
    p.add_argument("--dim", type=int, default=1536)
    p.add_argument("--k", type=int, default=8)
    p.add_argument("--exact-rows", type=int, default=10_000, help="subsample for the exact methods' ratio")
    args = p.parse_args(argv)
    load_before = os.getloadavg()
    x = features(args.n, args.dim, args.k)
    sub = x[: args.exact_rows]
    weak = features(args.n, args.dim, args.k, seed=1, spread=0.05)
    labels: dict[str, np.ndarray] = {}

    def keep(name: str, fn: Callable[[], np.ndarray]) -> Callable[[], None]:
        return lambda: labels.__setitem__(name, fn())

    res = {
        "PCA colours (pca_rgb)": measure(lambda: pca_rgb(x)),
        "k-means clusters (kmeans_labels)": measure(lambda: kmeans_labels(x, args.k)),
        "click: cosine to one tile (cosine_to)": measure(lambda: cosine_to(x, 123)),
        f"exact SVD, first {len(sub):,} rows": measure(
            lambda: np.linalg.svd(sub - sub.mean(0), full_matrices=False)
        ),
        f"kmeans_labels (numpy Lloyd), first {len(sub):,} rows": measure(lambda: kmeans_labels(sub, args.k)),
        f"full k-means (scikit-learn), first {len(sub):,} rows": measure(
            lambda: KMeans(args.k, n_init=4, random_state=0).fit(l2_normalise(sub, dtype=np.float32))
        ),
        "weak structure: k-means (kmeans_labels)": measure(keep("new", lambda: kmeans_labels(weak, args.k))),
        "weak structure: every seeding to convergence (before)": measure(
            keep("old", lambda: kmeans_to_convergence(weak, args.k))
        ),
        **h5_reads(x),
    }
    print(f"{args.n:,} x {args.dim} float32 features ({x.nbytes / 2**20:.0f} MB), k={args.k}; "
          f"load average before {_load(load_before)}, after {_load(os.getloadavg())}")  # fmt: skip
    for name, (sec, mb) in res.items():
        print(f"  {name:55s} {sec:7.2f} s   " + (f"peak +{mb:7.0f} MB" if mb >= 0 else "(time only)"))
    ratio = inertia(weak, labels["new"]) / inertia(weak, labels["old"])
    print(f"  weak structure: inertia kmeans_labels / before = {ratio:.5f}")
    rows = f"first {len(sub):,} rows"
    for before, now in (
        ("weak structure: every seeding to convergence (before)", "weak structure: k-means (kmeans_labels)"),
        ("TRIDENT h5 (1-row chunks): h5py dset[()]", "TRIDENT h5 (1-row chunks): read_rows"),
        (f"full k-means (scikit-learn), {rows}", f"kmeans_labels (numpy Lloyd), {rows}"),
    ):
        print(f"  time ratio, same run: {before} / {now} = x{res[before][0] / max(res[now][0], 1e-9):.2f}")
    return res


def _load(avg: tuple[float, float, float]) -> str:
    return " ".join(f"{v:.2f}" for v in avg)


if __name__ == "__main__":
    main()
