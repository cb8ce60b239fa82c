"""plismbench's float16 robustness metrics, reproduced bit for bit (its numpy path).

owkin/plism-benchmark ``engine/evaluate.py``: ``compute_metrics_ab`` casts the (2n, D) concatenated features to
float16, then ``core_compute_metrics`` takes ``dot = m @ m.T`` (numpy's float16 matmul: exact products summed
one by one in a float32 accumulator, rounded to float16 once), ``norm = np.linalg.norm(m, axis=1)`` (float16),
``cos = dot / (norm * norm.T)`` (float16), the mean cosine ``np.diag(cos[:n, n:]).mean()`` (a float16 mean) and
``np.argpartition(-cos, range(1, kmax + 1), axis=1)[:, 1:kmax + 1]``: column 0 is assumed to be the query
itself, so when the matched tile ties with (or beats) the self-cosine in float16, the match can be dropped.

We repeat each step: the float32 accumulation runs on the torch device one feature at a time (the same
order as numpy's loop, so the same roundings), the norms and argpartition are numpy's own, applied to blocks of
rows (argpartition works row by row, so blocks give the full matrix's result). cupy's (GPU) matmul sums in
another order; its rare float16 rounding differences are not reproduced (docs/evaluation.md).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from napari_pathdistill.errors import EvaluationError


def _half_dots(q_t: torch.Tensor, m_t: torch.Tensor) -> torch.Tensor:
    """(D, b).T @ (D, 2n) summed feature by feature in float32, as numpy's float16 matmul; -> (b, 2n) float16.

    The product of two float16 values is exact in float32, so only the order of the additions matters.
    """
    acc = torch.zeros(q_t.shape[1], m_t.shape[1], dtype=torch.float32, device=q_t.device)
    for d in range(q_t.shape[0]):
        acc.addcmul_(q_t[d, :, None], m_t[None, d])
    return acc.to(torch.float16)


def _overflow() -> EvaluationError:
    return EvaluationError(
        "mixed-precision (float16) cosines overflow on these features (norms too large for float16, "
        "plismbench would report NaN here); run without --mixed-precision (float32)"
    )


def _refuse_zero_norms(norm16: np.ndarray, n: int) -> None:
    """A zero (or, in float16, underflowing) feature vector has no cosine: plismbench divides 0 by 0."""
    zero = np.flatnonzero(norm16 == 0)
    if len(zero):
        slide, row = ("a", zero[0]) if zero[0] < n else ("b", zero[0] - n)
        raise EvaluationError(
            f"{len(zero)} tile(s) have a zero feature vector in float16 (first: row {row} of slide {slide}); "
            "its cosine is undefined (0 / 0, plismbench would report NaN); drop those tiles or re-extract"
        )


def _cos_block(start: int, stop: int, m_t: torch.Tensor, norm: torch.Tensor) -> np.ndarray:
    """(stop - start, 2n) float16 cosines of rows ``start:stop`` with every tile, on the host."""
    dots = _half_dots(m_t[:, start:stop], m_t)
    cos = dots / (norm[start:stop, None] * norm[None, :])  # float16 products and quotient, as numpy's
    if not bool(torch.isfinite(cos).all()):
        raise _overflow()
    return cos.cpu().numpy()


def plismbench_f16(
    a: np.ndarray, b: np.ndarray, ks: Sequence[int], device: torch.device, block: int = 2048
) -> tuple[float, dict[int, float]]:
    """plismbench's float16 mean cosine and top-k accuracies of one pair.

    Args:
        a: (n, D) features of slide 1 (row i matches row i of ``b``).
        b: (n, D) features of slide 2.
        ks: values of k (capped at 2n - 1, where plismbench's argpartition would fail).
        device: torch device for the float32 accumulation.
        block: query rows per block; memory is about ``block * 2n`` float32.

    Returns:
        The float16 mean cosine (as a float) and ``{k: accuracy}`` averaged over both directions.

    Raises:
        EvaluationError: the float16 computation overflows, or a feature vector is zero in float16.
    """
    n = len(a)
    m16 = np.concatenate([np.asarray(a), np.asarray(b)]).astype(np.float16)
    with np.errstate(over="ignore", invalid="ignore"):
        norm16 = np.linalg.norm(m16, axis=1)
    if not np.isfinite(norm16).all():
        raise _overflow()
    _refuse_zero_norms(norm16, n)
    m_t = torch.as_tensor(m16, device=device).to(torch.float32).T.contiguous()  # (D, 2n)
    norm = torch.as_tensor(norm16, device=device)
    kmax = min(max(ks), 2 * n - 1)
    target = np.r_[np.arange(n, 2 * n), np.arange(n)]  # the matched tile of each row of [a; b]
    top = np.empty((2 * n, kmax), dtype=np.int64)
    matched = np.empty(n, dtype=np.float16)
    for start in range(0, 2 * n, block):
        stop = min(start + block, 2 * n)
        cos = _cos_block(start, stop, m_t, norm)
        rows = np.arange(start, min(stop, n))
        matched[rows] = cos[rows - start, rows + n]
        top[start:stop] = np.argpartition(-cos, range(1, kmax + 1), axis=1)[:, 1 : kmax + 1]
    topk = {}
    for k in ks:
        hit = np.any(top[:, :k] == target[:, None], axis=1)
        topk[int(k)] = (np.sum(hit[:n]) / n + np.sum(hit[n:]) / n) / 2
    return float(matched.mean()), {k: float(v) for k, v in topk.items()}
