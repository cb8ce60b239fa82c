"""Lloyd's k-means in float32 numpy: the refinement step of :func:`metrics.features.kmeans_labels`.

Written here instead of calling scikit-learn's ``KMeans`` so that the viewer's maps never import scikit-learn:
in a napari session that already holds torch, ``import sklearn.cluster`` costs ~0.9 s of GIL-holding imports
and ~90 MB of resident memory, for an algorithm of a few matrix products. It follows scikit-learn's Lloyd
(``sklearn.cluster.KMeans(algorithm="lloyd")``): assign every row to its nearest centre, move each centre to
the mean of its rows, relocate empty clusters to the rows farthest from their centres, stop when the
assignment no longer changes or the centres move less than ``tol`` times the data's mean variance.
"""

from __future__ import annotations

import numpy as np

from napari_pathdistill.progress import checkpoint

#: Lloyd iterations at most (scikit-learn's default)
MAX_ITER = 300
#: relative tolerance on the squared centre shift (scikit-learn's default)
TOL = 1e-4


def lloyd(
    x: np.ndarray,
    centres: np.ndarray,
    max_iter: int = MAX_ITER,
    tol: float = TOL,
    chunk: int = 65_536,
    inertia_tol: float = 0.0,
) -> tuple[np.ndarray, np.ndarray, float]:
    """Refine (k, D) ``centres`` on (M, D) rows by Lloyd's iterations.

    Args:
        x: (M, D) rows (computed in float32).
        centres: (k, D) initial centres, e.g. k-means++ seeds.
        max_iter: iterations at most.
        tol: stop when the summed squared centre shift is at most ``tol`` x the mean per-dimension variance.
        chunk: rows per distance block (bounds the (chunk, k) temporaries).
        inertia_tol: also stop when an iteration lowers the inertia by at most this fraction of it (0: never;
            scikit-learn has no such rule: on features without strong clusters its Lloyd crawls on for
            hundreds of iterations, each lowering the inertia by a few parts per million).

    Returns:
        (k, D) float32 centres, (M,) int64 labels of each row's nearest centre, and the inertia (sum of squared
        distances of the rows to their centres).
    """
    x = np.asarray(x, np.float32)
    c = np.array(centres, np.float32)
    tol_abs = tol * _mean_variance(x)
    labels, d2 = assign(x, c, chunk)
    inertia = float(d2.sum())
    for _ in range(max_iter):
        checkpoint()  # a cancelled worker stops between iterations
        new = cluster_means(x, labels, c, d2)
        shift = float(((new - c) ** 2).sum())
        c = new
        new_labels, d2 = assign(x, c, chunk)
        new_inertia = float(d2.sum())
        done = (
            np.array_equal(new_labels, labels)  # the centres are already the means of this assignment
            or shift <= tol_abs
            or inertia - new_inertia <= inertia_tol * inertia
        )
        labels, inertia = new_labels, new_inertia
        if done:
            break
    return c, labels, inertia


def assign(
    x: np.ndarray, centres: np.ndarray, chunk: int = 65_536, norms: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(M, D) rows, (k, D) centres -> (M,) int64 nearest centre and (M,) float64 squared distance to it.

    With ``norms`` (M,) (``metrics.features.row_norms``), the rows are taken as divided by them (L2-normalised)
    without forming that copy.
    """
    c = centres.astype(np.float32, copy=False)
    c2 = np.einsum("ij,ij->i", c, c, dtype=np.float64)
    labels = np.empty(len(x), np.int64)
    d2 = np.empty(len(x), np.float64)
    for i in range(0, len(x), chunk):
        checkpoint()
        xi = x[i : i + chunk]
        dots = xi @ c.T
        if norms is None:
            x2 = np.einsum("ij,ij->i", xi, xi, dtype=np.float64)
        else:  # unit rows (a zero row, whose norm row_norms clamps to 1e-12, stays zero)
            dots = dots / norms[i : i + chunk, None]
            x2 = (norms[i : i + chunk] > 1e-12).astype(np.float64)
        dist = c2[None, :] - 2.0 * dots  # (m, k) float64; |x|^2 added after the argmin
        labels[i : i + chunk] = lab = dist.argmin(axis=1)
        d2[i : i + chunk] = np.maximum(dist[np.arange(len(xi)), lab] + x2, 0.0)
    return labels, d2


def cluster_means(x: np.ndarray, labels: np.ndarray, centres: np.ndarray, d2: np.ndarray) -> np.ndarray:
    """(k, D) float32 mean of each cluster's rows; an empty cluster takes one of the rows farthest from their
    centres (largest ``d2`` first, each row used once), as scikit-learn relocates empty clusters.

    Each cluster's rows are gathered by a boolean mask and summed in float64 (one copy of the rows in all).
    The one-hot product ``(k, M) @ (M, D)`` this replaces is a skinny GEMM that OpenBLAS's threads take
    0.3-0.4 s for at 10k x 1536 when the CPU is shared (load 7 on 2 cores; the masks: 20-30 ms), most of a
    100k-tile k-means."""
    k = len(centres)
    counts = np.bincount(labels, minlength=k)
    out = np.zeros((k, x.shape[1]), np.float32)
    for j in range(k):
        if counts[j]:
            out[j] = x[labels == j].sum(axis=0, dtype=np.float64) / counts[j]
    empty = np.flatnonzero(counts == 0)
    if len(empty):
        far = np.argsort(d2, kind="stable")[::-1][: len(empty)]
        out[empty[: len(far)]] = x[far]
    return out


def _mean_variance(x: np.ndarray) -> float:
    """Mean over dimensions of the per-dimension variance of (M, D) ``x``, without an (M, D) temporary."""
    if len(x) == 0:
        return 0.0
    sq = float(np.einsum("ij,ij->", x, x, dtype=np.float64)) / len(x)
    mu = x.mean(axis=0, dtype=np.float64)
    return max(sq - float(mu @ mu), 0.0) / x.shape[1]
