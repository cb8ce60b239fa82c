"""Embedding visualisation helpers: PCA to RGB, k-means labels, cosine to one tile (numpy/scikit-learn)."""

from __future__ import annotations

import numpy as np
from sklearn.cluster import KMeans


def pca_rgb(features: np.ndarray) -> np.ndarray:
    """(N, D) -> (N, 3) float in [0, 1]: first three principal components, each min-max scaled.

    Fewer than 3 components (N or D < 3) leave the missing channels at 0.5.
    """
    x = np.asarray(features, dtype=np.float64)
    x = x - x.mean(0, keepdims=True)
    out = np.full((len(x), 3), 0.5)
    if len(x) < 2:
        return out
    u, s, _ = np.linalg.svd(x, full_matrices=False)
    p = min(3, len(s))
    pcs = u[:, :p] * s[:p]
    lo, span = pcs.min(0), np.ptp(pcs, axis=0)
    out[:, :p] = np.where(span > 0, (pcs - lo) / np.where(span > 0, span, 1), 0.5)
    return out


def kmeans_labels(features: np.ndarray, k: int, seed: int = 0) -> np.ndarray:
    """(N, D) -> (N,) int labels in 1..k (0 is kept for background), k-means on L2-normalised features."""
    x = np.asarray(features, dtype=np.float64)
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    k = max(1, min(int(k), len(x)))
    return KMeans(n_clusters=k, n_init=4, random_state=seed).fit_predict(x).astype(np.int64) + 1


def cosine_to(features: np.ndarray, index: int) -> np.ndarray:
    """(N, D) -> (N,) cosine similarity of every row to row ``index``."""
    x = np.asarray(features, dtype=np.float64)
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    return (x @ x[index]).astype(np.float32)
