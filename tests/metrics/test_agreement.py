"""Agreement metrics against independent formulas: CKA through HSIC, Pearson r via scipy, k-NN overlap by hand."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import pearsonr

from napari_pathdistill.errors import EvaluationError
from napari_pathdistill.metrics.agreement import (
    attention_agreement,
    invariant_cka_ceiling,
    knn_overlap,
    linear_cka,
)


def hsic_cka(x, y):
    """CKA through the HSIC formula on Gram matrices: tr(K H L H) / sqrt(tr(KHKH) tr(LHLH))."""
    n = len(x)
    h = np.eye(n) - np.ones((n, n)) / n
    k, l_ = x @ x.T, y @ y.T
    hsic = lambda a, b: np.trace(a @ h @ b @ h)  # noqa: E731
    return hsic(k, l_) / np.sqrt(hsic(k, k) * hsic(l_, l_))


def test_linear_cka_against_hsic_and_invariances():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(60, 10))
    y = x @ rng.normal(size=(10, 7)) + 0.5 * rng.normal(size=(60, 7))
    assert linear_cka(x, y) == pytest.approx(hsic_cka(x, y), rel=1e-10)
    q, _ = np.linalg.qr(rng.normal(size=(10, 10)))
    assert linear_cka(x, 3.0 * x @ q + 5.0) == pytest.approx(1.0)
    assert linear_cka(x, rng.normal(size=(60, 10))) < 0.4


def test_invariant_cka_ceiling_is_the_gram_projection_and_bounds_every_invariant_representation():
    """10 tiles x 4 versions: a per-tile signal plus a version-specific (stain/scanner) change."""
    rng = np.random.default_rng(3)
    groups = np.repeat(np.arange(10), 4)[rng.permutation(40)]  # rows in any order
    x = rng.normal(size=(10, 8))[groups] + 0.8 * rng.normal(size=(40, 8))
    ceiling = invariant_cka_ceiling(x, groups)
    # by hand: P averages within groups, K the centred Gram; ceiling = ||P K P|| / ||K||
    p = (groups[:, None] == groups[None, :]) / np.bincount(groups)[groups][None, :]
    h = np.eye(40) - 1 / 40
    k = h @ x @ x.T @ h
    assert ceiling == pytest.approx(np.linalg.norm(p @ k @ p) / np.linalg.norm(k), rel=1e-9)
    assert 0.3 < ceiling < 0.95
    for width in (1, 3, 8, 50):  # no representation constant within groups scores above it
        y = rng.normal(size=(10, width))[groups]
        assert linear_cka(x, y) <= ceiling + 1e-12
    assert invariant_cka_ceiling(x[np.argsort(groups)][::4].repeat(4, 0), np.repeat(np.arange(10), 4)) == (
        pytest.approx(1.0)
    )  # an invariant reference: nothing is lost
    with pytest.raises(EvaluationError, match="groups"):
        invariant_cka_ceiling(x, groups[:5])


def test_attention_agreement():
    rng = np.random.default_rng(2)
    a = rng.random((4, 16, 16))
    r = attention_agreement(a, a.copy())
    assert np.allclose(r, 1.0)
    # a coarse 8x8 map upsampled to 16x16 correlates with itself after resizing
    coarse = rng.random((3, 8, 8))
    fine = np.kron(coarse, np.ones((2, 2)))
    assert (attention_agreement(coarse, fine) > 0.8).all()
    direct = [pearsonr(a[i].ravel(), (1 - a[i]).ravel())[0] for i in range(4)]
    assert np.allclose(attention_agreement(a, 1 - a), direct)
    assert np.isnan(attention_agreement(np.ones((1, 4, 4)), a[:1, :4, :4]))[0]


def test_knn_overlap_by_hand():
    # 1-D points: neighbours by cosine need >1 dim; use angles on the unit circle
    ang = np.array([0.0, 0.1, 0.3, 1.5, 1.6])
    x = np.c_[np.cos(ang), np.sin(ang)]
    assert np.allclose(knn_overlap(x, x, 2), 1.0)
    # y swaps tiles 0 and 3: its angles are (1.5, 0.1, 0.3, 0.0, 1.6). Two nearest angles, self excluded:
    #   x: 0 -> {1, 2}, 1 -> {0, 2}, 2 -> {1, 0}, 3 -> {4, 2}, 4 -> {3, 2}
    #   y: 0 -> {4, 2}, 1 -> {3, 2}, 2 -> {1, 3}, 3 -> {1, 2}, 4 -> {0, 2}
    # each tile shares exactly one of its two neighbours (tile 2 in rows 0, 1, 3, 4; tile 1 in row 2)
    y = x[[3, 1, 2, 0, 4]]
    assert knn_overlap(x, y, 2).tolist() == [0.5] * 5
    assert knn_overlap(x, y, 4).tolist() == [1.0] * 5  # k = n - 1: every other tile is a neighbour


def _knn_overlap_full_sort(x: np.ndarray, y: np.ndarray, k: int) -> np.ndarray:
    """Brute force: the full N x N cosine matrix, self excluded, a stable sort (ties to the lower index)."""

    def knn(f):
        f = f / np.linalg.norm(f, axis=1, keepdims=True)
        s = f @ f.T
        np.fill_diagonal(s, -np.inf)
        return np.argsort(-s, axis=1, kind="stable")[:, :k]

    return np.array([len(set(r) & set(q)) / k for r, q in zip(knn(x), knn(y), strict=True)])


@pytest.mark.parametrize("block", [1, 7, 4096])
def test_knn_overlap_in_blocks_equals_the_full_sort_ties_included(block):
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(60, 5)), rng.normal(size=(60, 7))
    for k in (1, 3, 10, 59):
        assert knn_overlap(x, y, k, block=block).tolist() == _knn_overlap_full_sort(x, y, k).tolist()
    # exact ties: signed axis vectors (unit norms, cosines exactly 0 or +-1), many tiles at the same cosine
    axes = np.r_[np.eye(3), -np.eye(3)]
    xi, yi = axes[rng.integers(0, 6, size=50)], axes[rng.integers(0, 6, size=50)]
    for k in (1, 4, 12):
        assert knn_overlap(xi, yi, k, block=block).tolist() == _knn_overlap_full_sort(xi, yi, k).tolist()


def test_knn_overlap_memory_is_bounded_by_the_block():
    """The N x N similarity matrix and its argsort (2 x 8 N^2 bytes: 20 GB at 50,000 tiles) were built at once;
    blocks of rows keep the peak near block x N values."""
    import tracemalloc

    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(6000, 8)), rng.normal(size=(6000, 8))
    tracemalloc.start()
    knn_overlap(x, y, 5)  # default block: 1,024 tiles
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 250e6, f"{peak / 1e6:.0f} MB"  # the full 6,000 x 6,000 matrix alone is 288 MB


def test_knn_overlap_reports_each_block_and_stops_at_a_cancel_between_blocks() -> None:
    """The k-NN overlap of a teacher-vs-student run is quadratic in the tiles (20,000 tiles x 1,536-d: 71 s on the
    shared CI cores, ~30 min for 100,000) and neither reported progress nor reached a Cancel: the Evaluate dock
    sat at 'student: N/N' and Cancel waited for the end. Each block now reports its fraction and is a
    cancellation point (``progress.checkpoint``)."""
    import threading

    from napari_pathdistill.errors import Cancelled
    from napari_pathdistill.progress import cancel_scope

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(10, 4)), rng.normal(size=(10, 3))
    seen: list[float] = []
    assert np.array_equal(knn_overlap(x, y, 3, block=4, progress=seen.append), knn_overlap(x, y, 3))
    assert seen == pytest.approx([0.4, 0.8, 1.0])
    cancel, blocks = threading.Event(), []

    def after_block(fraction: float) -> None:
        blocks.append(fraction)
        cancel.set()

    with pytest.raises(Cancelled), cancel_scope(cancel, "cancelled"):
        knn_overlap(x, y, 3, block=4, progress=after_block)
    assert blocks == [0.4]


def test_knn_overlap_at_scale_looks_for_a_cancel_after_a_bounded_number_of_rows() -> None:
    """A block was 1,024 tiles whatever N and D: at 100,000 x 1,536 its two similarity products took 30 s each
    here, and a Cancel waited for both. The default block now holds ~4 G multiply-adds (32 tiles at 100,000 x
    1,536) and each product is a cancellation point."""
    import threading

    from napari_pathdistill.errors import Cancelled
    from napari_pathdistill.metrics.agreement import knn_block_rows
    from napari_pathdistill.progress import cancel_scope

    assert knn_block_rows(100_000, 1536) == 32 and knn_block_rows(2000, 1536) == 1024
    rng = np.random.default_rng(0)
    n = 3000
    x, y = rng.normal(size=(n, 4096)).astype(np.float32), rng.normal(size=(n, 8))
    cancel, seen = threading.Event(), []

    def after_block(fraction: float) -> None:
        seen.append(fraction)
        cancel.set()

    with pytest.raises(Cancelled), cancel_scope(cancel, "cancelled"):
        knn_overlap(x, y, 5, progress=after_block)
    assert len(seen) == 1 and round(seen[0] * n) == knn_block_rows(n, 4096) == 320  # was 1,024 rows
