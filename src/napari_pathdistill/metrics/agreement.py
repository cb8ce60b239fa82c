"""Agreement of two models on the same tiles: linear CKA and k-NN overlap of embeddings, attention correlation."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from skimage.transform import resize

from napari_pathdistill.errors import EvaluationError
from napari_pathdistill.metrics.features import l2_normalise
from napari_pathdistill.progress import checkpoint


def linear_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Linear centred kernel alignment (Kornblith et al. 2019), feature-space formula.

    ``CKA = ||Yc^T Xc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F)`` with column-centred ``Xc``, ``Yc``. Invariant to
    orthogonal transforms and isotropic scaling; the dimensions of x and y may differ.

    Each of its three products is a cancellation point (``progress.checkpoint``), but not interruptible
    within: at 100,000 x 1,536 the largest takes seconds.

    Args:
        x: (n, D1) embeddings of n tiles by model 1 (e.g. teacher).
        y: (n, D2) embeddings of the same tiles by model 2 (e.g. student).
    """
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if x.ndim != 2 or y.ndim != 2 or len(x) != len(y) or len(x) < 2:
        raise EvaluationError(
            f"CKA needs (n, D) matrices for the same n >= 2 tiles, got {x.shape}, {y.shape}"
        )
    xc, yc = x - x.mean(0), y - y.mean(0)
    checkpoint()  # each product is one BLAS call (seconds at 100,000 x 1,536): a Cancel waits for one
    num = np.linalg.norm(yc.T @ xc, "fro") ** 2
    checkpoint()
    gram_x = np.linalg.norm(xc.T @ xc, "fro")
    checkpoint()
    den = gram_x * np.linalg.norm(yc.T @ yc, "fro")
    return float(num / den) if den > 0 else float("nan")


def group_means(x: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """(n, D) rows of ``x`` replaced by the mean of their group (``groups``: (n,) labels): the invariant part."""
    x, groups = np.asarray(x, dtype=np.float64), np.asarray(groups)
    if groups.shape != (len(x),):
        raise EvaluationError(f"groups must be ({len(x)},) labels, got {groups.shape}")
    _, inverse = np.unique(groups, return_inverse=True)
    sums = np.zeros((inverse.max() + 1, x.shape[1]))
    np.add.at(sums, inverse, x)
    return (sums / np.bincount(inverse)[:, None])[inverse]


def invariant_cka_ceiling(x: np.ndarray, groups: np.ndarray) -> float:
    """The highest linear CKA with ``x`` that any representation constant within each group can reach.

    Groups are the versions of one tile (the same tissue under other stains / scanners). A representation
    that is invariant to those changes has a centred Gram matrix of the form ``P M P``, with ``P`` the
    projection that averages rows within groups. Among those, the one closest in cosine to ``x``'s centred Gram
    ``K`` is its projection ``P K P``, the Gram of the group means of ``x``; so the ceiling is
    ``linear_cka(x, group_means(x)) = ||P K P||_F / ||K||_F``. A student exactly as robust as wanted cannot
    score above it, whatever its training.

    Args:
        x: (n, D) embeddings of n tiles by the reference model (e.g. the teacher).
        groups: (n,) group label of each tile (equal labels = versions of the same tile).
    """
    return linear_cka(x, group_means(x, groups))


def _knn_mask(f: np.ndarray, start: int, stop: int, k: int) -> np.ndarray:
    """(stop - start, N) bool: the ``k`` nearest neighbours (cosine, self excluded) of unit rows ``start:stop``.

    Ties at the k-th value go to the lower index, as a stable sort of ``-cosine`` would choose them.
    """
    s = f[start:stop] @ f.T
    rows = np.arange(stop - start)
    s[rows, rows + start] = -np.inf
    kth = -np.partition(-s, k - 1, axis=1)[:, k - 1 : k]  # the k-th largest cosine of each row
    above = s > kth
    tie = s == kth
    return above | (tie & (np.cumsum(tie, axis=1) <= k - above.sum(1, keepdims=True)))


#: multiply-adds of one k-NN overlap similarity product (rows x N x D): ~0.7 s on two busy cores, so that a
#: Cancel waits for at most one (a block of 1,024 rows of 100,000 x 1,536 features took 30 s)
BLOCK_MACS = 2**32


def knn_block_rows(n: int, d: int) -> int:
    """Rows of a :func:`knn_overlap` block for N = ``n`` tiles of ``d`` dimensions: 1,024 up to N x D = 4.2 M
    (2,700 tiles of 1,536-d), fewer above (32 at 100,000 x 1,536). A multiple of 32, at least 32: the BLAS
    computes such row blocks' similarities bit for bit as the rows of larger ones (not those of 7 rows, checked
    with OpenBLAS 0.3.31), and below 32 the product is bound by memory bandwidth (32 rows already cost 30 % more
    per row than 256)."""
    return max(32, min(1024, BLOCK_MACS // max(1, n * d) // 32 * 32))


def knn_overlap(
    x: np.ndarray,
    y: np.ndarray,
    k: int,
    block: int | None = None,
    progress: Callable[[float], None] | None = None,
) -> np.ndarray:
    """Per-tile fraction of the ``k`` cosine nearest neighbours (self excluded) two representations share.

    Computed for ``block`` tiles at a time, so memory is about ``block x N`` values, never ``N x N`` (50,000
    tiles: 400 MB a block instead of 20 GB for the similarity matrix and its sort). The time is quadratic in N
    (20,000 tiles x 1,536-d: ~70 s on two busy cores): each block and each of its two similarity products is a
    cancellation point (``progress.checkpoint``), and each block reports the fraction done to ``progress``. The
    block size changes neither the result (each row's neighbours are found on its own) nor, below 1,024 rows,
    more than the time (the default's rows keep a block near :data:`BLOCK_MACS` multiply-adds).

    Args:
        x: (N, D1) embeddings of N tiles by model 1.
        y: (N, D2) embeddings of the same tiles by model 2.
        k: neighbours per tile (1 <= k < N).
        block: tiles per similarity block; None: :func:`knn_block_rows` of N and the larger D.
        progress: optional ``progress(fraction)`` called after each block (it may raise to stop).

    Returns:
        (N,) overlap in [0, 1].

    Raises:
        EvaluationError: x and y hold different numbers of tiles, or k is not in [1, N - 1].
    """
    fx, fy = l2_normalise(x), l2_normalise(y)
    n = len(fx)
    if len(fy) != n or not 1 <= k < n:
        raise EvaluationError(
            f"k-NN overlap needs the same N tiles in both and 1 <= k < N; got {n}, {len(fy)}, k={k}"
        )
    block = block or knn_block_rows(n, max(fx.shape[1], fy.shape[1]))
    out = np.empty(n)
    for start in range(0, n, block):
        checkpoint()
        stop = min(start + block, n)
        near_x = _knn_mask(fx, start, stop, k)
        checkpoint()
        shared = near_x & _knn_mask(fy, start, stop, k)
        out[start:stop] = shared.sum(1) / k
        if progress is not None:
            progress(stop / n)
    return out


def knn_overlap_chance(n_tiles: int, k: int) -> float:
    """Expected :func:`knn_overlap` of two unrelated representations of ``n_tiles`` tiles: ``k / (n - 1)``.

    Each tile's ``k`` neighbours are drawn from its ``n - 1`` other tiles; two random draws share ``k^2 / (n - 1)``
    of them on average, a fraction ``k / (n - 1)`` of ``k`` (capped at 1: with ``k >= n - 1`` every other tile
    is a neighbour and the overlap is 1 whatever the models).
    """
    return min(1.0, k / max(1, n_tiles - 1))


def _to_grid(maps: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    if maps.shape[1:] == shape:
        return maps.astype(np.float64)
    return np.stack([resize(m.astype(np.float64), shape, order=1, anti_aliasing=True) for m in maps])


def attention_agreement(
    maps_a: np.ndarray, maps_b: np.ndarray, grid: tuple[int, int] | None = None
) -> np.ndarray:
    """Per-tile Pearson correlation between two models' attention maps.

    Maps are resized (bilinear) to a common grid first: the finer of the two by default, e.g. a ViT-B/14
    16x16 map against a ViT-g/14 16x16 map, or a CNN 7x7 Grad-CAM against a 16x16 ViT map.

    Args:
        maps_a: (B, ha, wa) attention maps of model a.
        maps_b: (B, hb, wb) maps of the same tiles by model b.
        grid: (h, w) common grid; default the larger of the two.

    Returns:
        (B,) Pearson r per tile (NaN for a constant map).
    """
    if maps_a.ndim != 3 or maps_b.ndim != 3 or len(maps_a) != len(maps_b):
        raise EvaluationError(
            f"attention maps must be (B, h, w) for the same tiles: {maps_a.shape}, {maps_b.shape}"
        )
    if grid is None:
        grid = max(maps_a.shape[1:], maps_b.shape[1:], key=lambda s: s[0] * s[1])
    a = _to_grid(maps_a, grid).reshape(len(maps_a), -1)
    b = _to_grid(maps_b, grid).reshape(len(maps_b), -1)
    a -= a.mean(1, keepdims=True)
    b -= b.mean(1, keepdims=True)
    den = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (a * b).sum(1) / den, np.nan)


def top_overlap(maps_a: np.ndarray, maps_b: np.ndarray, frac: float = 0.1) -> np.ndarray:
    """Per-tile overlap of the two maps' most attended ``frac`` of pixels (chance level: ``frac``).

    Args:
        maps_a: (B, h, w) maps of model a.
        maps_b: (B, h, w) maps of the same tiles by model b, on the same grid.
        frac: the top fraction compared (0.1: the top 10 %).

    Returns:
        (B,) |top_a & top_b| / |top_a| in [0, 1]: 1 when both models look at the same places.
    """
    if maps_a.shape != maps_b.shape or maps_a.ndim != 3:
        raise EvaluationError(f"maps must be (B, h, w) on the same grid: {maps_a.shape}, {maps_b.shape}")
    a, b = maps_a.reshape(len(maps_a), -1), maps_b.reshape(len(maps_b), -1)
    k = max(1, round(frac * a.shape[1]))
    top_a = np.argsort(-a, axis=1, kind="stable")[:, :k]
    top_b = np.argsort(-b, axis=1, kind="stable")[:, :k]
    hit = np.zeros(a.shape, bool)
    np.put_along_axis(hit, top_a, True, axis=1)
    return np.take_along_axis(hit, top_b, axis=1).mean(1)


def map_agreement(map_a: np.ndarray, map_b: np.ndarray, frac: float = 0.1) -> tuple[float, float]:
    """Pearson r and top-``frac`` overlap of two whole-region maps over the pixels finite in both.

    Args:
        map_a: (H, W) map of model a (NaN outside tiles).
        map_b: (H, W) map of model b on the same canvas.
        frac: top fraction for the overlap.

    Returns:
        (r, overlap); NaN when fewer than two common pixels or a constant map.
    """
    ok = np.isfinite(map_a) & np.isfinite(map_b)
    a, b = map_a[ok].astype(np.float64), map_b[ok].astype(np.float64)
    if a.size < 2:
        return float("nan"), float("nan")
    r = attention_agreement(a[None, :, None], b[None, :, None])[0]
    return float(r), float(top_overlap(a[None, :, None], b[None, :, None], frac)[0])
