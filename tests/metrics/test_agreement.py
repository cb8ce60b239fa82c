"""Agreement metrics against independent formulas: CKA through HSIC, Pearson r via scipy, k-NN overlap by hand."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import pearsonr

from napari_pathdistill.metrics.agreement import attention_agreement, knn_overlap, linear_cka


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
    # y swaps tiles 0 and 3: tile 1's two neighbours in x are {0, 2}, in y {2, 3}... computed both ways
    y = x[[3, 1, 2, 0, 4]]

    def knn(f, k):
        f = f / np.linalg.norm(f, axis=1, keepdims=True)
        s = f @ f.T
        np.fill_diagonal(s, -np.inf)
        return [set(np.argsort(-r, kind="stable")[:k]) for r in s]

    expected = [len(p & q) / 2 for p, q in zip(knn(x, 2), knn(y, 2))]
    assert np.allclose(knn_overlap(x, y, 2), expected)
    assert knn_overlap(x, y, 2).min() < 1
