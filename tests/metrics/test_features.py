"""PCA colours, k-means labels and cosine against scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.decomposition import PCA
from sklearn.metrics.pairwise import cosine_similarity

from napari_pathdistill.metrics.features import cosine_to, kmeans_labels, pca_rgb, principal_components


def test_visual_helpers_against_sklearn():
    rng = np.random.default_rng(0)
    shift = np.r_[np.full(4, 6.0), np.zeros(4)]
    # two clusters pointing in different directions (k-means runs on L2-normalised features)
    f = np.concatenate([rng.normal(0, 1, (20, 8)) + shift, rng.normal(0, 1, (20, 8)) + shift[::-1]]).astype(
        np.float32
    )
    rgb = pca_rgb(f)
    ref = PCA(3).fit_transform(f)
    for j in range(3):
        assert abs(np.corrcoef(rgb[:, j], ref[:, j])[0, 1]) > 0.999
    assert rgb.min() == 0 and rgb.max() == 1
    labels = kmeans_labels(f, 2)
    assert set(labels) == {1, 2} and len(set(labels[:20])) == 1 and labels[0] != labels[-1]
    np.testing.assert_allclose(cosine_to(f, 3), cosine_similarity(f)[3], rtol=1e-5, atol=1e-6)


def test_principal_components_match_sklearn_and_degenerate_inputs():
    rng = np.random.default_rng(3)
    f = rng.normal(size=(30, 6)) * np.arange(1, 7)
    pcs = principal_components(f, 3)
    ref = PCA(3).fit_transform(f)
    assert pcs.dtype == np.float32 and pcs.shape == (30, 3)
    np.testing.assert_allclose(np.abs(pcs), np.abs(ref), rtol=1e-4, atol=1e-4)
    assert principal_components(f[:1]).shape == (1, 0)
    assert principal_components(f[:2, :2], 3).shape == (2, 2)
    assert np.all(pca_rgb(f[:1]) == 0.5)


def _clustered(n: int, d: int, k: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(n, d) float32 rows around k well-separated random directions, and their true cluster ids."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((k, d)) * 3
    truth = rng.integers(0, k, n)
    return (centres[truth] + rng.standard_normal((n, d))).astype(np.float32), truth


def test_randomized_pca_of_a_large_input_matches_the_exact_components() -> None:
    from napari_pathdistill.metrics import features

    x, _ = _clustered(3_000, 1_600, 6)  # 4.8M elements: above EXACT_MAX_ELEMENTS
    assert x.size > features.EXACT_MAX_ELEMENTS
    fast = principal_components(x, 3, dtype=np.float64)
    xc = x.astype(np.float64) - x.mean(0)
    u, s, _ = np.linalg.svd(xc, full_matrices=False)
    for i in range(3):  # same components up to sign, same variance
        r = np.corrcoef(fast[:, i], u[:, i] * s[i])[0, 1]
        assert abs(r) > 0.999
        assert np.std(fast[:, i]) == pytest.approx(np.std(u[:, i] * s[i]), rel=1e-3)
    np.testing.assert_array_equal(fast, principal_components(x, 3, dtype=np.float64))  # seeded


def test_minibatch_kmeans_of_a_large_input_finds_the_true_clusters() -> None:
    from sklearn.metrics import adjusted_rand_score

    x, truth = _clustered(6_000, 800, 5, seed=1)  # 4.8M elements: the MiniBatchKMeans path
    labels = kmeans_labels(x, 5)
    assert labels.min() == 1 and labels.max() == 5
    assert adjusted_rand_score(truth, labels) > 0.99


def test_nearest_centre_and_cosine_without_copies() -> None:
    from napari_pathdistill.metrics.features import nearest_centre

    rng = np.random.default_rng(2)
    x, c = rng.standard_normal((500, 16)).astype(np.float32), rng.standard_normal((7, 16)).astype(np.float32)
    brute = np.argmin(((x[:, None, :] - c[None]) ** 2).sum(-1), axis=1)
    np.testing.assert_array_equal(nearest_centre(x, c, chunk=64), brute)
    x[3] = 0  # a zero row stays at cosine 0
    cos = cosine_to(x, 5)
    assert cos.dtype == np.float32 and cos[3] == 0 and cos[5] == pytest.approx(1.0, abs=1e-6)
