"""Independent references for the PLISM metrics, shared by tests/metrics and tests/evaluation.

``reference_a2``: Filiot et al. 2025, appendix A.2, written query by query (float64, or plismbench's float16
order of operations). ``plismbench_core``: owkin/plism-benchmark ``engine/evaluate.py::core_compute_metrics``
(cpu branch), reimplemented from its source to show where it differs. ``plismbench_float16``: the same with its
float16 cast (``compute_metrics_ab``), ported line for line, which ``mixed_precision=True`` reproduces exactly.
"""

from __future__ import annotations

import numpy as np

KS = (1, 3, 5, 10)


def reference_a2(a: np.ndarray, b: np.ndarray, ks=KS, half: bool = False) -> tuple[float, dict[int, float]]:
    """Appendix A.2 written query by query; ``half`` evaluates the cosines in plismbench's float16 order."""
    n = len(a)
    tiles = np.concatenate([a, b]).astype(np.float16 if half else np.float64)
    norms = np.sqrt((tiles * tiles).sum(1))
    hits = {k: 0 for k in ks}
    cosines = []
    for q in range(2 * n):
        target = q + n if q < n else q - n
        cos = (tiles @ tiles[q]) / (norms * norms[q])
        cos = cos.astype(np.float64)
        if q < n:
            cosines.append(cos[target])
        others = np.delete(cos, q)
        rank = int((others >= cos[target]).sum())
        for k in ks:
            hits[k] += rank <= k
    return float(np.mean(cosines)), {k: hits[k] / (2 * n) for k in ks}


def plismbench_core(a: np.ndarray, b: np.ndarray, ks=KS) -> dict[int, float]:
    """plismbench ``core_compute_metrics`` (cpu branch), reimplemented from owkin/plism-benchmark's source."""
    n = len(a)
    ab = np.concatenate([a, b])
    norm = np.linalg.norm(ab, axis=1, keepdims=True)
    cos = (ab @ ab.T) / (norm * norm.T)
    top = np.argpartition(-cos, range(1, max(ks) + 1), axis=1)[:, 1 : max(ks) + 1]
    out = {}
    for k in ks:
        acc_a = np.sum(np.any(top[:n, :k] == np.arange(n, 2 * n)[:, None], axis=1)) / n
        acc_b = np.sum(np.any(top[n:, :k] == np.arange(0, n)[:, None], axis=1)) / n
        out[k] = (acc_a + acc_b) / 2
    return out


def plismbench_float16(matrix_a: np.ndarray, matrix_b: np.ndarray, k_list=KS) -> tuple[float, list[float]]:
    """plismbench ``compute_metrics_ab`` + ``core_compute_metrics`` (device='cpu'), ported verbatim."""
    matrix_ab = np.concatenate([matrix_a, matrix_b], axis=0).astype(np.float16)
    n_tiles = matrix_ab.shape[0] // 2
    dot_product_ab = np.matmul(matrix_ab, matrix_ab.T)
    norm_ab = np.linalg.norm(matrix_ab, axis=1, keepdims=True)
    cosine_ab = dot_product_ab / (norm_ab * norm_ab.T)
    mean_cosine_ab = float(np.diag(cosine_ab[:n_tiles, n_tiles:]).mean())
    kmax = max(k_list)
    top_kmax_indices_ab = np.argpartition(-cosine_ab, range(1, kmax + 1), axis=1)[:, 1 : kmax + 1]
    top_k_accuracies = []
    for k in k_list:
        top_k_indices_ab = top_kmax_indices_ab[:, :k]
        top_k_indices_a, top_k_indices_b = top_k_indices_ab[:n_tiles], top_k_indices_ab[n_tiles:]
        top_k_accs = []
        for i, top_k_indices in enumerate([top_k_indices_a, top_k_indices_b]):
            other_slide_indices = np.arange(n_tiles, 2 * n_tiles) if i == 0 else np.arange(0, n_tiles)
            correct_matches = np.sum(np.any(top_k_indices == other_slide_indices[:, None], axis=1))
            top_k_accs.append(float(correct_matches / n_tiles))
        top_k_accuracies.append(sum(top_k_accs) / 2)
    return mean_cosine_ab, top_k_accuracies
