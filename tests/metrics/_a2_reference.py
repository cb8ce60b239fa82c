"""Independent references for the PLISM metrics, shared by tests/metrics and tests/evaluation.

``reference_a2``: Filiot et al. 2025, appendix A.2, written query by query (float64, or plismbench's float16
order of operations). ``plismbench_core``: owkin/plism-benchmark ``engine/evaluate.py::core_compute_metrics``
(cpu branch), reimplemented from its source to show where it differs.
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
