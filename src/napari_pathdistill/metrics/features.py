"""Feature-space summaries of (N, D) tile embeddings: PCA scores and colours, k-means labels, cosine to one tile.

numpy/scikit-learn only, sized for whole slides (100k tiles x 1536-d). :func:`principal_components` is the
project's one PCA: an exact centred SVD for small inputs, a seeded randomized SVD with implicit centring above
:data:`EXACT_MAX_ELEMENTS` (no centred copy of the matrix, a few passes over it). k-means runs on L2-normalised
float32 features, full k-means for small inputs and MiniBatchKMeans fitted on a subsample for large ones; every
tile is then assigned to its nearest centre in one pass.
"""

from __future__ import annotations

import numpy as np
from sklearn.cluster import KMeans, MiniBatchKMeans

#: inputs up to this many elements get the exact SVD / full k-means
EXACT_MAX_ELEMENTS = 4_000_000
#: rows MiniBatchKMeans is fitted on (then every row is assigned)
KMEANS_FIT_ROWS = 20_000


def principal_components(features: np.ndarray, n: int = 3, dtype: type = np.float32) -> np.ndarray:
    """(N, D) -> (N, min(n, N, D)) PCA scores (components by decreasing variance).

    Exact (centred SVD in float64) up to :data:`EXACT_MAX_ELEMENTS` elements, else a randomized SVD with
    implicit centring (Halko et al. 2011; seeded, so the same input gives the same scores). Fewer than 2 rows
    give no component: (N, 0).
    """
    x = np.asarray(features)
    if len(x) < 2:
        return np.zeros((len(x), 0), dtype=dtype)
    p = min(n, *x.shape)
    if x.size <= EXACT_MAX_ELEMENTS:
        xc = x.astype(np.float64) - x.mean(axis=0, dtype=np.float64)
        u, s, _ = np.linalg.svd(xc, full_matrices=False)
        return (u[:, :p] * s[:p]).astype(dtype)
    return _randomized_scores(x, p).astype(dtype)


def _randomized_scores(x: np.ndarray, p: int, oversample: int = 10, n_iter: int = 6) -> np.ndarray:
    """Top-``p`` PCA scores of (N, D) ``x`` by a randomized SVD of ``x - mean`` without forming it."""
    x = x.astype(np.float32, copy=False)
    mu = x.mean(axis=0, dtype=np.float64).astype(np.float32)
    rng = np.random.default_rng(0)
    q = rng.standard_normal((x.shape[1], min(p + oversample, x.shape[1]))).astype(np.float32)

    def a_times(m: np.ndarray) -> np.ndarray:  # (x - 1 mu^T) m
        return x @ m - mu @ m

    def at_times(m: np.ndarray) -> np.ndarray:  # (x - 1 mu^T)^T m
        return x.T @ m - np.outer(mu, m.sum(axis=0))

    y, _ = np.linalg.qr(a_times(q))
    for _ in range(n_iter):
        z, _ = np.linalg.qr(at_times(y))
        y, _ = np.linalg.qr(a_times(z))
    b = at_times(y).T  # (l, D) = y^T (x - 1 mu^T)
    ub, s, _ = np.linalg.svd(b.astype(np.float64), full_matrices=False)
    return (y.astype(np.float64) @ ub[:, :p]) * s[:p]


def pca_rgb(features: np.ndarray) -> np.ndarray:
    """(N, D) -> (N, 3) float in [0, 1]: first three principal components, each min-max scaled.

    Fewer than 3 components (N or D < 3) leave the missing channels at 0.5.
    """
    return scores_rgb(principal_components(features, 3, dtype=np.float64))


def scores_rgb(pcs: np.ndarray) -> np.ndarray:
    """(N, p<=3) PCA scores -> (N, 3) float in [0, 1], each component min-max scaled (missing ones 0.5)."""
    out = np.full((len(pcs), 3), 0.5)
    p = pcs.shape[1]
    if p == 0:
        return out
    lo, span = pcs.min(0), np.ptp(pcs, axis=0)
    out[:, :p] = np.where(span > 0, (pcs - lo) / np.where(span > 0, span, 1), 0.5)
    return out


def kmeans_labels(features: np.ndarray, k: int, seed: int = 0) -> np.ndarray:
    """(N, D) -> (N,) int labels in 1..k (0 is kept for background), k-means on L2-normalised features.

    Full k-means (4 inits) up to :data:`EXACT_MAX_ELEMENTS` elements; above, MiniBatchKMeans fitted on
    :data:`KMEANS_FIT_ROWS` random rows, then every row goes to its nearest centre.
    """
    x = np.asarray(features)
    k = max(1, min(int(k), len(x)))
    if x.size <= EXACT_MAX_ELEMENTS:
        xn = l2_normalise(x, dtype=np.float32)
        return KMeans(n_clusters=k, n_init=4, random_state=seed).fit_predict(xn).astype(np.int64) + 1
    norms = row_norms(x)
    rows = np.sort(
        np.random.default_rng(seed).choice(len(x), size=min(KMEANS_FIT_ROWS, len(x)), replace=False)
    )
    sample = x[rows].astype(np.float32) / norms[rows, None].astype(np.float32)
    km = MiniBatchKMeans(n_clusters=k, n_init=3, batch_size=2048, random_state=seed).fit(sample)
    return nearest_centre(x, km.cluster_centers_.astype(np.float32), norms) + 1


def row_norms(x: np.ndarray) -> np.ndarray:
    """(N, D) -> (N,) float64 L2 norms (zero rows get 1e-12), without an (N, D) temporary."""
    return np.sqrt(np.maximum(np.einsum("ij,ij->i", x, x, dtype=np.float64), 1e-24))


def nearest_centre(
    x: np.ndarray, centres: np.ndarray, norms: np.ndarray | None = None, chunk: int = 65_536
) -> np.ndarray:
    """(N, D), (k, D) -> (N,) int64 index of each row's nearest centre (squared L2), in row chunks.

    With ``norms`` (N,), the rows are taken as divided by them (L2-normalised) without forming that copy.
    """
    c2 = (centres.astype(np.float64) ** 2).sum(axis=1)
    out = np.empty(len(x), dtype=np.int64)
    for i in range(0, len(x), chunk):
        dots = x[i : i + chunk] @ centres.T  # |x|^2 is the same for every centre
        if norms is not None:
            dots = dots / norms[i : i + chunk, None]
        out[i : i + chunk] = np.argmin(c2[None, :] - 2.0 * dots, axis=1)
    return out


def l2_normalise(features: np.ndarray, dtype: type = np.float64) -> np.ndarray:
    """(N, D) -> (N, D) rows of unit L2 norm as ``dtype`` (zero rows stay zero)."""
    x: np.ndarray = np.asarray(features, dtype=dtype)
    return x / row_norms(x).astype(dtype)[:, None]


def cosine_to(features: np.ndarray, index: int) -> np.ndarray:
    """(N, D) -> (N,) float32 cosine similarity of every row to row ``index`` (one matrix-vector product,
    no normalised copy of the matrix)."""
    x = np.asarray(features)
    if x.dtype not in (np.float32, np.float64):
        x = x.astype(np.float32)
    norms = row_norms(x)
    return ((x @ x[index]) / (norms * norms[index])).astype(np.float32)
