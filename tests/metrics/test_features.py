"""PCA colours, k-means labels and cosine against scikit-learn."""

from __future__ import annotations

import numpy as np
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
