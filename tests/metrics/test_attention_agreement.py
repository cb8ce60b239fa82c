"""Top-10 % overlap and whole-map agreement of two attention maps, checked against direct computations."""

from __future__ import annotations

import numpy as np
import pytest

from napari_pathdistill.errors import EvaluationError
from napari_pathdistill.metrics.agreement import map_agreement, top_overlap


def test_top_overlap_counts_shared_hot_spots():
    a = np.zeros((2, 10, 10))
    a[:, :1] = 1.0  # top 10 % = the first row
    b = a.copy()
    b[1] = 0.0
    b[1, 0, :5] = 1.0  # half of tile 1's hot spots shared
    b[1, 9, :5] = 0.5
    np.testing.assert_allclose(top_overlap(a, b, 0.1), [1.0, 0.5])
    rng = np.random.default_rng(0)
    x, y = rng.random((200, 10, 10)), rng.random((200, 10, 10))
    assert top_overlap(x, y).mean() == pytest.approx(0.1, abs=0.02)  # chance level = the fraction
    assert (top_overlap(x, -x) == 0).all()
    with pytest.raises(EvaluationError):
        top_overlap(x, y[:, :5])


def test_map_agreement_ignores_nan_and_matches_numpy():
    rng = np.random.default_rng(1)
    a, b = rng.random((30, 40)), rng.random((30, 40))
    b = 0.5 * a + b
    a[:5] = np.nan
    b[:, -3:] = np.nan
    ok = np.isfinite(a) & np.isfinite(b)
    r, ov = map_agreement(a, b)
    assert r == pytest.approx(np.corrcoef(a[ok], b[ok])[0, 1])
    k = round(0.1 * ok.sum())
    top_a, top_b = set(np.argsort(-a[ok])[:k]), set(np.argsort(-b[ok])[:k])
    assert ov == pytest.approx(len(top_a & top_b) / k)
    assert np.isnan(map_agreement(np.full((3, 3), np.nan), a[:3, :3])[0])
