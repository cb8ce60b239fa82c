"""PLISM robustness metrics (cosine similarity and top-k retrieval) as plismbench computes them.

For a slide pair (S1, S2) with ``n`` matched tiles (row ``i`` of both feature matrices is the same tissue
location):

* **mean cosine**: ``mean_i cos(a_i, b_i)``, each cosine clipped to [-1, 1] (float rounding);
* **top-k accuracy** (Filiot et al. 2025, appendix A.2): for a query ``a_i`` the ``2n - 1`` candidates are all
  tiles of both slides but the query itself; ``rank(b_i) = |{t != a_i : cos(a_i, t) >= cos(a_i, b_i)}|`` (ties
  count against the query) and the query is a hit when ``rank <= k``. The accuracy is averaged over the
  queries of S1 (target in S2) and of S2 (target in S1).

Two precisions: float32 (the default: unit-normalise, then one matmul; the definition above) and
``mixed_precision=True``, which reproduces plismbench's float16 numpy computation bit for bit, its
argpartition included (``metrics.pairs_f16``; there the match can be dropped when it ties with the query).
Where float16 overflows (feature norms above ~256 give dot products past float16's 65,504, so plismbench
gets inf/inf = NaN) we raise an ``EvaluationError`` instead of reporting NaN.

The computation is chunked: a block of ``block`` queries is compared with both slides by one matmul
(``(block, D) @ (D, n)``) on the GPU when one is present, so ``n = 16,278`` tiles never needs the full
``(2n, 2n)`` similarity matrix. The rank needs only a count, never a sort.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from napari_pathdistill.device import resolve_device
from napari_pathdistill.errors import Cancelled, EvaluationError
from napari_pathdistill.metrics.pairs_f16 import plismbench_f16
from napari_pathdistill.progress import Progress

DEFAULT_KS: tuple[int, ...] = (1, 3, 5, 10)

#: a top-k accuracy is flagged as not meaningful when a random ranking would already score more than this
MAX_TOPK_CHANCE = 0.1


def topk_chance(n_tiles: int, k: int) -> float:
    """Top-k accuracy of a random ranking: ``k / (2n - 1)`` candidates hit (capped at 1)."""
    return min(1.0, k / max(1, 2 * n_tiles - 1))


def topk_pool_note(n_tiles: int, k: int, max_chance: float = MAX_TOPK_CHANCE) -> str | None:
    """Why a top-k accuracy over ``n_tiles`` matched tiles means nothing, or None when it can mean something.

    With ``n`` tiles per slide a query has ``2n - 1`` candidates; when ``k`` of them is more than ``max_chance``
    of the pool, chance alone gives that accuracy (4 tiles, top-5: 5 of 7 candidates, 0.71).
    """
    chance = topk_chance(n_tiles, k)
    if chance <= max_chance:
        return None
    return (
        f"{2 * n_tiles - 1} candidates, a random ranking scores {chance:.2f}; top-{k} needs >= "
        f"{int(np.ceil((k / max_chance + 1) / 2))} matched tiles"
    )


@dataclass(frozen=True)
class PairMetrics:
    """Robustness metrics of one slide pair.

    Attributes:
        cosine: mean cosine similarity of matched tiles.
        topk: ``{k: accuracy}`` averaged over both retrieval directions.
        n_tiles: number of matched tiles ``n``.
    """

    cosine: float
    topk: dict[int, float] = field(default_factory=dict)
    n_tiles: int = 0

    def as_row(self) -> dict[str, float]:
        """Flat dict in plismbench's column names (``cosine_similarity``, ``top_{k}_accuracy``)."""
        row = {"cosine_similarity": self.cosine}
        row.update({f"top_{k}_accuracy": v for k, v in self.topk.items()})
        return row


def _unit_rows(x: np.ndarray, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """(n, D) features as unit rows: ``cos(i, j) = x[i] @ x[j]``."""
    t = torch.as_tensor(np.asarray(x), device=device).to(dtype)
    return torch.nn.functional.normalize(t, dim=1, eps=1e-12)


def check_finite(features: np.ndarray, what: str) -> None:
    """Refuse (n, D) features with NaN or inf values, naming ``what`` (a slide or file) and how many rows.

    A NaN cosine makes every ``>=`` comparison false, so the matched tile would rank first: a silent hit.

    Raises:
        EvaluationError: some row holds a non-finite value.
    """
    x = np.asarray(features)
    if x.dtype.kind not in "fc" or x.size == 0:
        return
    bad = int((~np.isfinite(x)).reshape(len(x), -1).any(axis=1).sum())
    if bad:
        raise EvaluationError(
            f"{what}: {bad} of {len(x)} tiles have non-finite (NaN or inf) features; re-extract them "
            "(a NaN cosine would count as a top-k hit)"
        )


def _check_pair(a: np.ndarray, b: np.ndarray, ks: Sequence[int], names: tuple[str, str]) -> None:
    if a.ndim != 2 or a.shape != b.shape:
        raise EvaluationError(
            f"matched feature matrices must both be (n, D) with the same shape; got {a.shape} and {b.shape}. "
            "Row i of both slides must be the same tissue location."
        )
    if a.shape[0] < 2:
        raise EvaluationError(f"need at least 2 matched tiles per slide, got {a.shape[0]}")
    if not ks or min(ks) < 1:
        raise EvaluationError(f"k values must be positive integers, got {list(ks)}")
    check_finite(a, names[0])
    check_finite(b, names[1])


def _directional_ranks(
    same: torch.Tensor, other: torch.Tensor, block: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rank of each query's matched tile among the 2n - 1 candidates (self excluded), and its cosine.

    Args:
        same: (n, D) unit rows of the query slide (every tile is a query).
        other: (n, D) unit rows of the other slide; row i is the match of query i.
        block: queries per matmul.

    Returns:
        (n,) int64 ranks (1 = the matched tile is the nearest neighbour) and (n,) float64 matched cosines.
    """
    n = same.shape[0]
    dev = same.device
    ranks = torch.empty(n, dtype=torch.int64, device=dev)
    matched = torch.empty(n, dtype=torch.float64)
    for start in range(0, n, block):
        stop = min(start + block, n)
        rows = torch.arange(start, stop, device=dev)
        s_same = same[start:stop] @ same.T  # (b, n)
        s_other = same[start:stop] @ other.T  # (b, n)
        target = s_other[rows - start, rows].unsqueeze(1)  # (b, 1)
        s_same[rows - start, rows] = -torch.inf  # exclude the query itself
        ranks[start:stop] = (s_same >= target).sum(1) + (s_other >= target).sum(1)
        matched[start:stop] = target[:, 0].to("cpu", torch.float64)  # MPS has no float64: cast on the host
    return ranks, matched


def pair_metrics(
    a: np.ndarray,
    b: np.ndarray,
    ks: Sequence[int] = DEFAULT_KS,
    *,
    device: str | torch.device | None = "auto",
    block: int = 2048,
    mixed_precision: bool = False,
    dtype: torch.dtype = torch.float32,
    names: tuple[str, str] = ("slide a", "slide b"),
) -> PairMetrics:
    """PLISM metrics of one slide pair.

    Args:
        a: (n, D) features of slide 1; row i matches row i of ``b``.
        b: (n, D) features of slide 2.
        ks: values of k for top-k accuracy (k > 2n - 1 gives accuracy 1).
        device: "auto", "cpu", "cuda"...
        block: queries per matmul; memory is about ``2 * block * n`` floats.
        mixed_precision: plismbench's float16 numpy computation, reproduced exactly
            (:func:`~napari_pathdistill.metrics.pairs_f16.plismbench_f16`) instead of float32 unit vectors.
        dtype: compute dtype of the unit-vector path (float32; float64 for exact-tie tests).
        names: the two slides' names for error messages.

    Returns:
        The pair's mean cosine, top-k accuracies and tile count.

    Raises:
        EvaluationError: shapes differ, fewer than 2 tiles, a k below 1, or NaN/inf features.
    """
    a, b = np.asarray(a), np.asarray(b)
    _check_pair(a, b, ks, names)
    dev = resolve_device(device)
    if mixed_precision:
        with torch.no_grad():
            cos16, topk16 = plismbench_f16(a, b, ks, dev, block)
        return PairMetrics(cosine=cos16, topk=topk16, n_tiles=int(a.shape[0]))
    with torch.no_grad():
        ta, tb = _unit_rows(a, dev, dtype), _unit_rows(b, dev, dtype)
        r_ab, matched = _directional_ranks(ta, tb, block)
        r_ba, _ = _directional_ranks(tb, ta, block)
        r_ab, r_ba = r_ab.cpu(), r_ba.cpu()
        # the diagonal of the a-b cosine block, as plismbench; float32 rounding gives 1.0000000438 for equal
        # tiles, so each cosine is clipped to [-1, 1] before the mean (ranks use the unclipped values)
        cosine = float(matched.clamp(-1.0, 1.0).mean())
        topk = {
            int(k): 0.5 * (float((r_ab <= k).double().mean()) + float((r_ba <= k).double().mean()))
            for k in ks
        }
    return PairMetrics(cosine=cosine, topk=topk, n_tiles=int(a.shape[0]))


def iter_pair_metrics(
    pairs: Sequence[tuple[str, str]],
    load_pair: Callable[[str, str], tuple[np.ndarray, np.ndarray]],
    ks: Sequence[int] = DEFAULT_KS,
    *,
    device: str | torch.device | None = "auto",
    block: int = 2048,
    mixed_precision: bool = False,
    cancel: threading.Event | None = None,
) -> Iterator[Progress | tuple[str, str, PairMetrics]]:
    """Metrics for many slide pairs, one at a time.

    Args:
        pairs: ``(slide_a, slide_b)`` names.
        load_pair: ``load_pair(slide_a, slide_b) -> (a, b)`` matched (n, D) feature matrices (cache the
            slides: every slide is used in many pairs).
        ks: values of k.
        device: torch device for the matmuls.
        block: queries per matmul.
        mixed_precision: plismbench's float16 path (see :func:`pair_metrics`).
        cancel: optional ``threading.Event``; when set, the generator stops before the next pair.

    Yields:
        ``Progress(done, total, "robustness")`` before each pair and ``(slide_a, slide_b, PairMetrics)``
        after it.
    """
    total = len(pairs)
    for i, (sa, sb) in enumerate(pairs):
        if cancel is not None and cancel.is_set():
            raise Cancelled("robustness evaluation cancelled")
        yield Progress(i, total, "robustness")
        yield (
            sa,
            sb,
            pair_metrics(
                *load_pair(sa, sb),
                ks,
                device=device,
                block=block,
                mixed_precision=mixed_precision,
                names=(sa, sb),
            ),
        )
    yield Progress(total, total, "robustness")
