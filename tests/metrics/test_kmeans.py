"""Lloyd's k-means and the PCA axes against scikit-learn, and the viewer's map path without scikit-learn."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from sklearn.cluster import KMeans
from sklearn.decomposition import PCA

from _fresh_process import run_code
from napari_pathdistill.errors import Cancelled
from napari_pathdistill.metrics.features import kmeans_labels, l2_normalise, pca_axes, principal_components
from napari_pathdistill.metrics.kmeans import assign, lloyd
from napari_pathdistill.progress import cancel_scope


def _blobs(n: int, d: int, k: int, spread: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((k, d)) * 3
    return (centres[rng.integers(0, k, n)] + spread * rng.standard_normal((n, d))).astype(np.float32)


@pytest.mark.parametrize("spread", [0.5, 4.0])  # separated blobs, and overlapping ones (many iterations)
def test_lloyd_follows_sklearn_from_the_same_centres(spread: float) -> None:
    x = _blobs(600, 12, 5, spread, seed=1)
    init = x[[0, 10, 20, 30, 40]].copy()
    centres, labels, inertia = lloyd(x, init)
    ref = KMeans(n_clusters=5, init=init, n_init=1, algorithm="lloyd").fit(x)
    np.testing.assert_array_equal(labels, ref.labels_)
    np.testing.assert_allclose(centres, ref.cluster_centers_, rtol=1e-4, atol=1e-4)
    assert inertia == pytest.approx(ref.inertia_, rel=1e-4)


def test_assign_is_the_brute_force_nearest_centre() -> None:
    x, c = _blobs(300, 6, 3, 1.0, seed=2), _blobs(4, 6, 2, 1.0, seed=3)
    d2 = ((x[:, None, :].astype(np.float64) - c[None]) ** 2).sum(-1)
    labels, dist = assign(x, c, chunk=64)
    np.testing.assert_array_equal(labels, d2.argmin(1))
    np.testing.assert_allclose(dist, d2.min(1), rtol=1e-4, atol=1e-4)


def test_an_empty_cluster_is_relocated_not_lost() -> None:
    x = _blobs(200, 4, 3, 0.3, seed=4)
    init = np.concatenate([x[:2], np.full((1, 4), 1e3, np.float32)])  # the third centre catches no row
    centres, labels, _ = lloyd(x, init)
    assert np.all(np.abs(centres) < 1e2) and len(np.unique(labels)) == 3


def test_kmeans_labels_reach_sklearn_inertia_on_real_like_overlap() -> None:
    x = _blobs(1_500, 32, 8, 3.0, seed=5)  # small input: all rows, 4 seedings
    labels = kmeans_labels(x, 8, seed=0)
    assert labels.min() == 1 and labels.max() == 8
    xn = l2_normalise(x, np.float32)
    ours = sum(float(((xn[labels == j] - xn[labels == j].mean(0)) ** 2).sum()) for j in range(1, 9))
    ref = KMeans(n_clusters=8, n_init=4, random_state=0).fit(xn).inertia_
    assert ours <= ref * 1.01
    np.testing.assert_array_equal(labels, kmeans_labels(x, 8, seed=0))  # seeded


def test_kmeans_of_features_without_clusters_stops_after_a_bounded_number_of_passes(monkeypatch) -> None:
    """80k x 64 random rows (no cluster structure: the case of 100k weakly structured tile features, where
    Lloyd to scikit-learn's convergence took 148 iterations per seeding, 40-60 s when a file was dropped):
    the old fit made 366 distance passes here. Counted by a spy around the real ``assign``."""
    import napari_pathdistill.metrics.features as feats_mod
    import napari_pathdistill.metrics.kmeans as kmeans_mod

    passes = []
    real = kmeans_mod.assign
    monkeypatch.setattr(kmeans_mod, "assign", lambda *a, **kw: passes.append(len(a[0])) or real(*a, **kw))
    x = np.random.default_rng(0).standard_normal((80_000, 64)).astype(np.float32)
    labels = kmeans_labels(x, 6, seed=0)
    fits = [m for m in passes if m == feats_mod.KMEANS_FIT_ROWS]  # the sample's passes (not the final one)
    assert 0 < len(fits) <= 80  # 3 seedings x (1 + 5 screening) + 1 + 50 refining at most
    assert sorted(np.unique(labels)) == list(range(1, 7))
    np.testing.assert_array_equal(labels, kmeans_labels(x, 6, seed=0))  # seeded


@pytest.mark.parametrize("spread", [0.05, 0.15, 0.4])  # separated .. overlapping clusters (cosine geometry)
def test_large_input_kmeans_is_as_good_as_sklearn(spread: float) -> None:
    """Above EXACT_MAX_ELEMENTS (sample fit, bounded iterations, one assignment pass): inertia on all rows
    within 1 % of scikit-learn's KMeans on all rows; well-separated clusters are recovered exactly."""
    from sklearn.metrics import adjusted_rand_score

    rng = np.random.default_rng(7)
    n, d, k = 20_000, 256, 6
    truth = rng.integers(0, k, n)
    centres = rng.standard_normal((k, d))
    x = (centres[truth] + spread * np.sqrt(d) * rng.standard_normal((n, d)) / 4).astype(np.float32)
    labels = kmeans_labels(x, k, seed=0)
    xn = l2_normalise(x, np.float32)
    ours = sum(float(((xn[labels == j] - xn[labels == j].mean(0)) ** 2).sum()) for j in range(1, k + 1))
    ref = KMeans(n_clusters=k, n_init=3, random_state=0).fit(xn)
    assert ours <= ref.inertia_ * 1.01
    if spread <= 0.15:
        assert adjusted_rand_score(truth, labels) == 1.0


@pytest.mark.parametrize("n", [400, 6_000])  # exact SVD, and randomized above EXACT_MAX_ELEMENTS (6000 x 800)
def test_pca_axes_are_sklearns_components_up_to_sign(n: int) -> None:
    rng = np.random.default_rng(6)
    scales = np.r_[10.0, 6.0, 4.0, np.linspace(1.0, 0.1, 797)]  # three distinct axes, then a flat tail
    rotation = np.linalg.qr(rng.standard_normal((800, 800)))[0]
    x = ((rng.standard_normal((n, 800)) * scales) @ rotation + 5.0).astype(np.float32)
    mu, comps = pca_axes(x, 3, fit_rows=n)
    ref = PCA(3, svd_solver="full").fit(x)
    np.testing.assert_allclose(mu, ref.mean_, rtol=1e-4, atol=1e-4)
    for a, b in zip(comps, ref.components_, strict=True):
        assert abs(float(a @ b)) > 0.999


SCRIPT = """
import sys
import numpy as np
import napari_pathdistill._qt.embed_widget, napari_pathdistill._qt.tile_search, napari_pathdistill._qt.dense_map
import napari_pathdistill._qt.similarity_widget, napari_pathdistill._qt.attention_widget, napari_pathdistill._feature_reader
import napari_pathdistill._qt.evaluate_widget, napari_pathdistill._qt.tissue_widget, napari_pathdistill._qt.metadata_widget
from napari_pathdistill.inference.map_summary import summarise
from napari_pathdistill.inference.dense_maps import _fit_pca
rng = np.random.default_rng(0)
for n in (300, 4_000):  # exact path, and the subsample path above 4M elements
    s = summarise(rng.standard_normal((n, 1_536)).astype(np.float32), 6)
    assert s.clusters.min() == 1 and s.clusters.max() == 6
_fit_pca(rng.standard_normal((2_000, 384)).astype(np.float32), 384)
print("sklearn" in sys.modules)
"""


def test_the_viewer_map_path_never_imports_sklearn() -> None:
    """Every dock module, and the Embed/search widgets' maps: scikit-learn would add ~90 MB and ~1 s of GIL-holding
    imports mid-run (the Evaluate dock imports it when an evaluation runs)."""
    proc = run_code(SCRIPT, timeout=240)
    assert proc.stdout.strip().splitlines()[-1] == "False"


@pytest.mark.parametrize("work", ["lloyd", "kmeans", "pca"])
def test_a_cancelled_worker_stops_inside_kmeans_and_pca(work: str) -> None:
    """Seconds each on 100k tiles: a cancelled scope (a closed window, removed layers) stops them at their next
    iteration or block instead of after the whole call; outside a scope they run as before."""
    x = _blobs(5_000, 1_024, 6, 4.0, seed=3)  # above EXACT_MAX_ELEMENTS: the sampled / randomized paths
    calls = {
        "lloyd": lambda: lloyd(x, x[:6].copy())[1],
        "kmeans": lambda: kmeans_labels(x, 6),
        "pca": lambda: principal_components(x, 3),
    }
    cancel = threading.Event()
    cancel.set()
    with cancel_scope(cancel, "map cancelled"), pytest.raises(Cancelled, match="map cancelled"):
        calls[work]()
    assert len(calls[work]()) == len(x)
