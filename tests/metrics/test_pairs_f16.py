"""``mixed_precision=True`` against a port of plismbench's float16 numpy code, bit for bit.

The port (``metrics._a2_reference.plismbench_float16``) is owkin/plism-benchmark ``engine/evaluate.py``
(``compute_metrics_ab`` casts to float16, then the cpu branch of ``core_compute_metrics``), line for line. Near-duplicate features (matched cosine ~0.9985) are the case
that matters: in float16 the self-cosine can tie with or fall below the match's, and ``argpartition(...)[:, 1:]``
then drops the match, so plismbench scores top-k below 1 where float32 gives 1.
"""

from __future__ import annotations

import numpy as np
import pytest

from metrics._a2_reference import plismbench_float16
from napari_pathdistill.errors import EvaluationError
from napari_pathdistill.metrics.pairs import pair_metrics

KS = (1, 3, 5, 10)


def _near_duplicates(seed: int, n: int = 300, d: int = 256, noise: float = 0.05, scale: float = 1.0):
    rng = np.random.default_rng(seed)
    mu, base = rng.normal(size=d), rng.normal(size=(n, d))
    a = (mu + base + noise * rng.normal(size=(n, d))) * scale
    b = (mu + base + noise * rng.normal(size=(n, d))) * scale
    return a.astype(np.float32), b.astype(np.float32)


@pytest.mark.parametrize("seed,block", [(0, 2048), (1, 37), (2, 300)])
def test_near_duplicates_reproduce_plismbench_float16_exactly(seed, block):
    a, b = _near_duplicates(seed)
    cos16, topk16 = plismbench_float16(a, b)
    m = pair_metrics(a, b, KS, device="cpu", block=block, mixed_precision=True)
    assert m.cosine == cos16  # the float16 mean, not clipped, not a float64 mean
    assert [m.topk[k] for k in KS] == topk16
    assert topk16[0] < 1.0  # float16 drops matches here ...
    assert pair_metrics(a, b, KS, device="cpu").topk[1] == 1.0  # ... float32 (the definition) does not


@pytest.mark.parametrize("seed,noise,scale", [(3, 0.5, 1.0), (4, 1.0, 3.0), (5, 0.02, 0.5)])
def test_generic_features_reproduce_plismbench_float16_exactly(seed, noise, scale):
    a, b = _near_duplicates(seed, n=150, d=96, noise=noise, scale=scale)
    cos16, topk16 = plismbench_float16(a, b)
    m = pair_metrics(a, b, KS, device="cpu", mixed_precision=True)
    assert (m.cosine, [m.topk[k] for k in KS]) == (cos16, topk16)


def test_float16_norm_overflow_is_refused():
    a, b = _near_duplicates(6, n=20, d=16, scale=400.0)
    with pytest.raises(EvaluationError, match="overflow"):
        pair_metrics(a, b, KS, device="cpu", mixed_precision=True)


@pytest.mark.gpu
def test_cuda_accumulation_reproduces_the_numpy_float16_path():
    a, b = _near_duplicates(7, n=400, d=128)
    cos16, topk16 = plismbench_float16(a, b)
    m = pair_metrics(a, b, KS, device="cuda", block=97, mixed_precision=True)
    assert (m.cosine, [m.topk[k] for k in KS]) == (cos16, topk16)


@pytest.mark.parametrize("value", [0.0, 1e-5])  # 1e-5 squared underflows to 0 in float16
def test_zero_feature_vector_is_named_not_called_an_overflow(value):
    a, b = _near_duplicates(8, n=20, d=16)
    b[4] = value
    with pytest.raises(EvaluationError, match="zero feature vector in float16 \\(first: row 4 of slide b\\)"):
        pair_metrics(a, b, KS, device="cpu", mixed_precision=True)
