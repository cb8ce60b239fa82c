"""PLISM metrics against a straightforward loop implementation and hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_pathdistill.errors import EvaluationError
from napari_pathdistill.metrics.pairs import pair_metrics


def reference_metrics(a: np.ndarray, b: np.ndarray, ks) -> tuple[float, dict[int, float]]:
    """Literal appendix-A.2 implementation: loops over queries and candidates, float64."""
    n = len(a)
    tiles = np.concatenate([a, b]).astype(np.float64)
    tiles /= np.linalg.norm(tiles, axis=1, keepdims=True)
    cos = float(np.mean([tiles[i] @ tiles[n + i] for i in range(n)]))
    hits = {k: [0, 0] for k in ks}
    for direction in (0, 1):
        for i in range(n):
            q, t = (i, n + i) if direction == 0 else (n + i, i)
            s_t = tiles[q] @ tiles[t]
            rank = sum(1 for j in range(2 * n) if j != q and tiles[q] @ tiles[j] >= s_t)
            for k in ks:
                hits[k][direction] += rank <= k
    return cos, {k: 0.5 * (h[0] / n + h[1] / n) for k, h in hits.items()}


@pytest.mark.parametrize("block", [3, 64])
def test_matches_loop_reference(block):
    rng = np.random.default_rng(0)
    a = rng.normal(size=(40, 16))
    b = a + rng.normal(scale=2.0, size=a.shape)  # noisy copy: accuracies strictly between 0 and 1
    ks = (1, 3, 5, 10)
    m = pair_metrics(a, b, ks, device="cpu", block=block, dtype=torch.float64)
    cos, topk = reference_metrics(a, b, ks)
    assert m.cosine == pytest.approx(cos, abs=1e-10)
    assert m.topk == pytest.approx(topk, abs=1e-12)
    assert 0 < m.topk[1] < m.topk[10] < 1


def test_identical_slides_cosine_one_top1_one():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(50, 8)).astype(np.float32)
    m = pair_metrics(a, a.copy(), device="cpu")
    assert m.cosine == pytest.approx(1.0, abs=1e-6)
    assert m.topk[1] == 1.0


def test_shuffled_correspondence_is_near_chance():
    rng = np.random.default_rng(2)
    n = 400
    a = rng.normal(size=(n, 32))
    b = a[rng.permutation(n)] + 0.01 * rng.normal(size=(n, 32))
    m = pair_metrics(a, b, (1, 10), device="cpu")
    # chance for a random target among 2n - 1 candidates is k / (2n - 1) ~ 0.0125 for k=10
    assert m.topk[1] < 0.02 and m.topk[10] < 0.05
    assert abs(m.cosine) < 0.1


def test_ties_count_against_the_query():
    # every tile is the same vector: all 2n - 1 candidates tie with the target -> rank = 2n - 1
    a = np.ones((5, 3))
    m = pair_metrics(a, a.copy(), (1, 8, 9, 10), device="cpu")
    assert m.topk == {1: 0.0, 8: 0.0, 9: 1.0, 10: 1.0}


def test_hand_computed_small_case():
    # 2 tiles per slide in 2-D. a0=(1,0), a1=(0,1), b0=(1,1)/sqrt2, b1=(-1,0.2)
    a = np.array([[1.0, 0.0], [0.0, 1.0]])
    b = np.array([[1.0, 1.0], [-1.0, 0.2]])
    # query a0: target b0 cos .707; candidates a1 0, b1 -.98 -> rank 1 (hit@1)
    # query a1: target b1 cos .196; candidates a0 0, b0 .707 -> rank 2
    # query b0: target a0 .707; candidates b1 (-.8/1.02/1.414=-.555), a1 .707 (tie) -> rank 2
    # query b1: target a1 .196; candidates b0 -.555, a0 -.98 -> rank 1
    m = pair_metrics(a, b, (1, 2, 3), device="cpu")
    assert m.topk == {1: 0.5, 2: 1.0, 3: 1.0}
    expected_cos = (1 / np.sqrt(2) + 0.2 / np.sqrt(1.04)) / 2
    assert m.cosine == pytest.approx(expected_cos, abs=1e-6)


def test_k_larger_than_candidates_gives_one():
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(4, 5)), rng.normal(size=(4, 5))
    assert pair_metrics(a, b, (7, 100), device="cpu").topk == {7: 1.0, 100: 1.0}


def test_bad_shapes_raise_clear_error():
    with pytest.raises(EvaluationError, match="same shape"):
        pair_metrics(np.zeros((4, 3)), np.zeros((5, 3)))
    with pytest.raises(EvaluationError, match="positive"):
        pair_metrics(np.ones((4, 3)), np.ones((4, 3)), (0,))


@pytest.mark.gpu
def test_gpu_matches_cpu():
    rng = np.random.default_rng(4)
    a = rng.normal(size=(300, 64)).astype(np.float32)
    b = a + rng.normal(scale=0.8, size=a.shape).astype(np.float32)
    cpu, gpu = pair_metrics(a, b, device="cpu"), pair_metrics(a, b, device="cuda", block=97)
    assert gpu.cosine == pytest.approx(cpu.cosine, abs=1e-5)
    assert gpu.topk == pytest.approx(cpu.topk, abs=2 / 300)


def plismbench_style(a: np.ndarray, b: np.ndarray, ks) -> dict[int, float]:
    """Dense (2n, 2n) cosine matrix + argpartition, the way plismbench's ``TopkAccuracy`` ranks neighbours."""
    n = len(a)
    ab = np.concatenate([a, b])
    cos = (ab @ ab.T) / np.outer(np.linalg.norm(ab, axis=1), np.linalg.norm(ab, axis=1))
    kmax = max(ks)
    top = np.argpartition(-cos, range(1, kmax + 1), axis=1)[:, 1 : kmax + 1]  # column 0 is the query itself
    out = {}
    for k in ks:
        hit_a = np.any(top[:n, :k] == np.arange(n, 2 * n)[:, None], axis=1).mean()
        hit_b = np.any(top[n:, :k] == np.arange(n)[:, None], axis=1).mean()
        out[k] = (hit_a + hit_b) / 2
    return out


def test_matches_plismbench_ranking_without_ties():
    rng = np.random.default_rng(5)
    a = rng.normal(size=(200, 24))
    b = a + rng.normal(scale=1.5, size=a.shape)
    ks = (1, 3, 5, 10)
    ours = pair_metrics(a, b, ks, device="cpu", block=50, dtype=torch.float64).topk
    assert ours == pytest.approx(plismbench_style(a, b, ks), abs=1e-12)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
@pytest.mark.parametrize("rows", [[0], slice(None)])
def test_non_finite_features_are_refused_not_scored(bad, rows):
    """A NaN cosine fails every ``>=``: the match ranked first and one all-NaN slide scored top-1 = 1.0."""
    rng = np.random.default_rng(9)
    a = rng.normal(size=(8, 16)).astype(np.float32)
    b = a + rng.normal(scale=2.0, size=a.shape).astype(np.float32)
    a[rows, 0] = bad
    n_bad = 8 if isinstance(rows, slice) else 1
    for mixed in (False, True):
        with pytest.raises(EvaluationError, match=rf"HE_A: {n_bad} of 8 tiles have non-finite"):
            pair_metrics(a, b, device="cpu", mixed_precision=mixed, names=("HE_A", "HE_B"))
