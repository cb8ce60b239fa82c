"""Feature-space summaries of (N, D) tile embeddings: PCA scores and colours, k-means labels, cosine to one tile.

numpy/scikit-learn only. :func:`principal_components` is the project's one PCA (centred SVD); the PCA
colours of the embedding map and the ``pc1..pc3`` columns of the layer features both come from it.
"""

from __future__ import annotations

import numpy as np
from sklearn.cluster import KMeans


def principal_components(features: np.ndarray, n: int = 3, dtype: type = np.float32) -> np.ndarray:
    """(N, D) -> (N, min(n, N, D)) PCA scores (centred SVD, components by decreasing variance).

    Fewer than 2 rows give no component: (N, 0). Computed in float64, returned as ``dtype``.
    """
    x = np.asarray(features, dtype=np.float64)
    if len(x) < 2:
        return np.zeros((len(x), 0), dtype=dtype)
    x = x - x.mean(axis=0, keepdims=True)
    u, s, _ = np.linalg.svd(x, full_matrices=False)
    p = min(n, *x.shape)
    return (u[:, :p] * s[:p]).astype(dtype)


def pca_rgb(features: np.ndarray) -> np.ndarray:
    """(N, D) -> (N, 3) float in [0, 1]: first three principal components, each min-max scaled.

    Fewer than 3 components (N or D < 3) leave the missing channels at 0.5.
    """
    pcs = principal_components(features, 3, dtype=np.float64)
    out = np.full((len(pcs), 3), 0.5)
    p = pcs.shape[1]
    if p == 0:
        return out
    lo, span = pcs.min(0), np.ptp(pcs, axis=0)
    out[:, :p] = np.where(span > 0, (pcs - lo) / np.where(span > 0, span, 1), 0.5)
    return out


def kmeans_labels(features: np.ndarray, k: int, seed: int = 0) -> np.ndarray:
    """(N, D) -> (N,) int labels in 1..k (0 is kept for background), k-means on L2-normalised features."""
    x = l2_normalise(features)
    k = max(1, min(int(k), len(x)))
    return KMeans(n_clusters=k, n_init=4, random_state=seed).fit_predict(x).astype(np.int64) + 1


def l2_normalise(features: np.ndarray) -> np.ndarray:
    """(N, D) -> (N, D) float64 rows of unit L2 norm (zero rows stay zero)."""
    x = np.asarray(features, dtype=np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def cosine_to(features: np.ndarray, index: int) -> np.ndarray:
    """(N, D) -> (N,) float32 cosine similarity of every row to row ``index``."""
    x = l2_normalise(features)
    return (x @ x[index]).astype(np.float32)
