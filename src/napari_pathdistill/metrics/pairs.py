"""PLISM robustness metrics (cosine similarity and top-k retrieval) as plismbench computes them.

For a slide pair (S1, S2) with ``n`` matched tiles (row ``i`` of both feature matrices is the same tissue
location):

* **mean cosine**: ``mean_i cos(a_i, b_i)``;
* **top-k accuracy** (Filiot et al. 2025, appendix A.2): for a query ``a_i`` the ``2n - 1`` candidates are all
  tiles of both slides but the query itself; ``rank(b_i) = |{t != a_i : cos(a_i, t) >= cos(a_i, b_i)}|`` (ties
  count against the query) and the query is a hit when ``rank <= k``. The accuracy is averaged over the
  queries of S1 (target in S2) and of S2 (target in S1).

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
from napari_pathdistill.progress import Progress

DEFAULT_KS: tuple[int, ...] = (1, 3, 5, 10)


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


def _normalise(x: np.ndarray | torch.Tensor, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """(n, D) array -> (n, D) unit-norm tensor on ``device`` (zero rows stay zero)."""
    t = torch.as_tensor(np.asarray(x), device=device).to(dtype)
    return torch.nn.functional.normalize(t, dim=1, eps=1e-12)


def _check_pair(a: np.ndarray, b: np.ndarray, ks: Sequence[int]) -> None:
    if a.ndim != 2 or a.shape != b.shape:
        raise EvaluationError(
            f"matched feature matrices must both be (n, D) with the same shape; got {a.shape} and {b.shape}. "
            "Row i of both slides must be the same tissue location."
        )
    if a.shape[0] < 2:
        raise EvaluationError(f"need at least 2 matched tiles per slide, got {a.shape[0]}")
    if not ks or min(ks) < 1:
        raise EvaluationError(f"k values must be positive integers, got {list(ks)}")


def _directional_ranks(q: torch.Tensor, same: torch.Tensor, other: torch.Tensor, block: int) -> torch.Tensor:
    """Rank of each query's matched tile among the 2n - 1 candidates (self excluded).

    Args:
        q: (n, D) unit-norm queries (rows of ``same``).
        same: (n, D) unit-norm tiles of the query slide.
        other: (n, D) unit-norm tiles of the other slide; row i is the match of query i.
        block: queries per matmul.

    Returns:
        (n,) int64 ranks, 1 = the matched tile is the nearest neighbour.
    """
    n = q.shape[0]
    ranks = torch.empty(n, dtype=torch.int64, device=q.device)
    for start in range(0, n, block):
        stop = min(start + block, n)
        rows = torch.arange(start, stop, device=q.device)
        s_same = q[start:stop] @ same.T  # (b, n)
        s_other = q[start:stop] @ other.T  # (b, n)
        target = s_other[rows - start, rows].unsqueeze(1)  # (b, 1)
        s_same[rows - start, rows] = -torch.inf  # exclude the query itself
        ranks[start:stop] = (s_same >= target).sum(1) + (s_other >= target).sum(1)
    return ranks


def pair_metrics(
    a: np.ndarray,
    b: np.ndarray,
    ks: Sequence[int] = DEFAULT_KS,
    *,
    device: str | torch.device | None = "auto",
    block: int = 2048,
    dtype: torch.dtype = torch.float32,
) -> PairMetrics:
    """PLISM metrics of one slide pair.

    Args:
        a: (n, D) features of slide 1; row i matches row i of ``b``.
        b: (n, D) features of slide 2.
        ks: values of k for top-k accuracy (k > 2n - 1 gives accuracy 1).
        device: "auto", "cpu", "cuda"...
        block: queries per matmul; memory is about ``2 * block * n`` floats.
        dtype: compute dtype (plismbench casts to float16; float32 is the default here).

    Returns:
        The pair's mean cosine, top-k accuracies and tile count.
    """
    a, b = np.asarray(a), np.asarray(b)
    _check_pair(a, b, ks)
    dev = resolve_device(device)
    with torch.no_grad():
        ta, tb = _normalise(a, dev, dtype), _normalise(b, dev, dtype)
        cosine = float(
            (ta * tb).sum(1).to("cpu", torch.float64).mean()
        )  # MPS has no float64: sum on the host
        r_ab = _directional_ranks(ta, ta, tb, block).cpu()
        r_ba = _directional_ranks(tb, tb, ta, block).cpu()
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
        yield sa, sb, pair_metrics(*load_pair(sa, sb), ks, device=device, block=block)
    yield Progress(total, total, "robustness")
