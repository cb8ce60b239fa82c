"""``pair_metrics`` against references written from the paper's formulas (Filiot et al. 2025, appendix A.2).

* float32 path vs a float64 reference of A.2: cosine_i = <a_i, b_i> / (|a_i| |b_i|); for a query a_i the
  candidates are the 2n - 1 other tiles of both slides, rank(b_i) = #{t != a_i : cos(a_i, t) >= cos(a_i, b_i)},
  hit when rank <= k, accuracy averaged over the queries of both slides.
* mixed precision vs the same formulas evaluated in plismbench's float16 order (cast the raw features to
  float16, matmul and norms in float16, divide after the matmul; ``engine/evaluate.py::compute_metrics_ab``).
* two edge cases where plismbench's code is off and ours is not (docs/evaluation.md, "Where plismbench is off").
"""

from __future__ import annotations

import numpy as np
import pytest

from metrics._a2_reference import KS, plismbench_core, reference_a2
from napari_pathdistill.errors import EvaluationError
from napari_pathdistill.metrics.pairs import pair_metrics


def _pair(seed: int, n: int = 60, d: int = 16, noise: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(n, d)).astype(np.float32)
    return a, (a + noise * rng.normal(size=a.shape)).astype(np.float32)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_float32_equals_the_a2_formulas(seed):
    a, b = _pair(seed)
    cos, topk = reference_a2(a, b)
    m = pair_metrics(a, b, KS, device="cpu", block=17)
    assert m.cosine == pytest.approx(cos, abs=1e-6)
    assert m.topk == pytest.approx(topk, abs=1e-12)  # the same ranks (one rank moves a value by 1/120)


@pytest.mark.parametrize("seed", [3, 4])
def test_mixed_precision_follows_plismbench_float16_within_1e3(seed):
    a, b = _pair(seed, n=80, d=32)
    a, b = 3.0 * a, 3.0 * b  # norms ~17: well inside float16's range
    cos16, topk16 = reference_a2(a, b, half=True)
    m = pair_metrics(a, b, KS, device="cpu", mixed_precision=True)
    assert m.cosine == pytest.approx(cos16, abs=1e-3)
    assert m.topk == pytest.approx(topk16, abs=1e-3)
    exact = pair_metrics(a, b, KS, device="cpu")
    assert m.cosine != exact.cosine  # the float16 path really ran
    assert m.cosine == pytest.approx(exact.cosine, abs=1e-3)


def test_identical_slides_plismbench_misses_half_we_do_not():
    """plismbench assumes the query sits in column 0 of argpartition; with b_i == a_i the tie is broken
    arbitrarily and about half the queries lose their match at top-1. By A.2 (ties count against the query,
    the only tie is the match itself) every query is a hit."""
    a, _ = _pair(5, n=200)
    ours = pair_metrics(a, a.copy(), KS, device="cpu")
    assert ours.topk[1] == 1.0 and reference_a2(a, a.copy())[1][1] == 1.0
    theirs = plismbench_core(a.astype(np.float64), a.astype(np.float64))
    assert theirs[1] < 0.9  # ~0.5: the match is dropped whenever it lands in column 0


def test_float16_overflow_is_refused_not_nan():
    """Norms above ~256 make float16 dot products overflow (65,504): plismbench gets inf / inf = NaN."""
    a, b = _pair(6)
    big_a, big_b = 400.0 * a, 400.0 * b
    with np.errstate(over="ignore", invalid="ignore"):
        ab = np.concatenate([big_a, big_b]).astype(np.float16)
        norm = np.linalg.norm(ab, axis=1, keepdims=True)
        assert np.isnan(np.diag(((ab @ ab.T) / (norm * norm.T))[: len(a), len(a) :]).mean())
    with pytest.raises(EvaluationError, match="overflow"):
        pair_metrics(big_a, big_b, KS, device="cpu", mixed_precision=True)
    m = pair_metrics(big_a, big_b, KS, device="cpu")  # float32 is scale-free
    assert m.cosine == pytest.approx(pair_metrics(a, b, KS, device="cpu").cosine, abs=1e-6)


@pytest.mark.gpu
def test_mixed_precision_on_cuda_follows_the_float16_reference():
    """The float16 path sums in float32 one feature at a time on any device (``pairs_f16._half_dots``, no cuBLAS
    half matmul), so CUDA gives the CPU's numbers bit for bit. The A.2 float16 reference differs from both by
    its own float16 norms and rank rule (argpartition there), one rank here: 1 / 800 = 1.25e-3 at n = 400."""
    a, b = _pair(7, n=400, d=64, noise=2.0)  # top-1 ~0.72, top-10 ~0.96: ranks that can move
    cpu = pair_metrics(a, b, KS, device="cpu", mixed_precision=True)
    m = pair_metrics(a, b, KS, device="cuda", block=97, mixed_precision=True)
    assert (m.cosine, m.topk) == (cpu.cosine, cpu.topk)
    assert 0 < m.topk[1] < m.topk[10] < 1
    cos16, topk16 = reference_a2(a, b, half=True)
    assert m.cosine == pytest.approx(cos16, abs=1e-3)
    assert m.topk == pytest.approx(topk16, abs=1.5e-3)
