"""Feature-space summaries of (N, D) tile embeddings: PCA scores and colours, k-means labels, cosine to one tile.

numpy (and scipy.linalg) only, never scikit-learn (the viewer's maps call these; see :mod:`metrics.kmeans`),
sized for whole slides (100k tiles x 1536-d). :func:`principal_components` / :func:`pca_axes` are the project's
one PCA: an exact centred SVD for small inputs, a seeded randomized SVD with implicit centring above
:data:`EXACT_MAX_ELEMENTS`, fitted on a row subsample, then every row projected (no centred copy of the matrix).
k-means runs on L2-normalised float32 features, on all rows for small inputs and on a row subsample for large
ones (float32 k-means++ seedings, each screened by a few Lloyd iterations, the lowest inertia refined on, a
bounded number of iterations); every tile is then assigned to its nearest centre in one pass.
"""

from __future__ import annotations

import numpy as np

from napari_pathdistill.metrics.kmeans import assign, lloyd
from napari_pathdistill.progress import checkpoint

#: inputs up to this many elements get the exact SVD / full k-means
EXACT_MAX_ELEMENTS = 4_000_000
#: rows the k-means of a large input is fitted on (then every row is assigned)
KMEANS_FIT_ROWS = 10_000
#: k-means++ seedings tried on a large input (each refined by Lloyd iterations; the lowest inertia wins)
KMEANS_INITS = 3
#: k-means++ seedings tried on a small input (scikit-learn's ``KMeans(n_init=4)`` of the earlier code)
KMEANS_INITS_SMALL = 4
#: Lloyd iterations each seeding is refined for before the lowest-inertia one is refined on alone
KMEANS_SCREEN_ITER = 5
#: Lloyd iterations at most of that refinement (scikit-learn's 300 ran 148 per seeding, 40-60 s in all, on
#: 100k tiles of features without strong clusters)
KMEANS_MAX_ITER = 50
#: Lloyd also stops when an iteration lowers the inertia by less than this fraction of it
KMEANS_INERTIA_TOL = 1e-4
#: rows the PCA of a large input is fitted on (then every row is projected)
PCA_FIT_ROWS = 10_000


def principal_components(
    features: np.ndarray, n: int = 3, dtype: type = np.float32, fit_rows: int | None = None
) -> np.ndarray:
    """(N, D) -> (N, min(n, N, D)) PCA scores (components by decreasing variance).

    Exact (centred SVD in float64) up to :data:`EXACT_MAX_ELEMENTS` elements. Above, the mean and components
    are fitted by a seeded randomized SVD (implicit centring, Halko et al. 2011) on ``fit_rows`` random rows
    (default :data:`PCA_FIT_ROWS`; all rows when there are fewer), then every row is projected in chunks: the
    top components of 100k tiles are those of 10k of them to within sampling error, for a tenth of the work
    and no (N, D) temporary. Fewer than 2 rows give no component: (N, 0).
    """
    x = np.asarray(features)
    if len(x) < 2:
        return np.zeros((len(x), 0), dtype=dtype)
    p = min(n, *x.shape)
    if x.size <= EXACT_MAX_ELEMENTS:
        xc = x.astype(np.float64) - x.mean(axis=0, dtype=np.float64)
        u, s, _ = np.linalg.svd(xc, full_matrices=False)
        return (u[:, :p] * s[:p]).astype(dtype)
    mu, comps = pca_axes(x, p, fit_rows)
    return project(x, mu, comps).astype(dtype)


def pca_axes(x: np.ndarray, p: int, fit_rows: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(M, D) -> mean (D,) float64 and top-``p`` principal axes (p, D) float64 (p <= min(M - 1, D)).

    The exact SVD up to :data:`EXACT_MAX_ELEMENTS` elements, above it the seeded randomized SVD of ``fit_rows``
    random rows (default :data:`PCA_FIT_ROWS`). Signs are the SVD's (arbitrary); see :func:`orient_scores`.
    """
    x = np.asarray(x)
    if x.size <= EXACT_MAX_ELEMENTS:
        mu = x.mean(axis=0, dtype=np.float64)
        _, _, vt = np.linalg.svd(x.astype(np.float64) - mu, full_matrices=False)
        comps = vt[:p]
    else:
        rows = _fit_rows(len(x), PCA_FIT_ROWS if fit_rows is None else fit_rows)
        mu, comps = _randomized_components(x[rows] if rows is not None else x, p)
    return mu, comps


def orient_scores(scores: np.ndarray, features: np.ndarray, axes: np.ndarray) -> np.ndarray:
    """Flip the columns of (N, p) PCA ``scores`` of (N, D) ``features`` that point against (q, D) ``axes``.

    An SVD's signs are arbitrary: the axes of the live map (fitted on the first tiles) and of the final refit
    may point opposite ways, which inverts a colour channel when the map is refitted. Column j (j < q) is
    negated when its covariance with ``features @ axes[j]`` is negative. Returns a new array.
    """
    out = np.array(scores, copy=True)
    q = min(out.shape[1], len(axes))
    if q == 0 or len(out) == 0:
        return out
    ref = np.asarray(features, np.float32) @ np.asarray(axes[:q], np.float32).T  # (N, q)
    ref = ref - ref.mean(axis=0)
    cov = np.einsum("ij,ij->j", out[:, :q] - out[:, :q].mean(axis=0), ref, dtype=np.float64)
    out[:, :q] *= np.where(cov < 0, -1, 1).astype(out.dtype)
    return out


def _fit_rows(n: int, fit_rows: int, seed: int = 0) -> np.ndarray | None:
    """Sorted seeded random subset of ``fit_rows`` of ``n`` row indices; None (all rows) when n <= fit_rows."""
    if n <= fit_rows:
        return None
    return np.sort(np.random.default_rng(seed).choice(n, size=fit_rows, replace=False))


def project(x: np.ndarray, mean: np.ndarray, components: np.ndarray, chunk: int = 65_536) -> np.ndarray:
    """(N, D) rows -> (N, p) float64 scores ``(x - mean) @ components.T``, in row chunks (no (N, D) copy)."""
    comps = components.astype(np.float32)
    offset = mean.astype(np.float64) @ components.T.astype(np.float64)
    out = np.empty((len(x), len(components)), np.float64)
    for i in range(0, len(x), chunk):
        checkpoint()
        out[i : i + chunk] = (np.asarray(x[i : i + chunk], np.float32) @ comps.T) - offset
    return out


def _randomized_components(
    x: np.ndarray, p: int, oversample: int = 10, n_iter: int = 6
) -> tuple[np.ndarray, np.ndarray]:
    """Mean (D,) float64 and top-``p`` principal axes (p, D) float64 of (M, D) ``x``, by a randomized SVD of
    ``x - mean`` without forming it."""
    x = x.astype(np.float32, copy=False)
    mu = x.mean(axis=0, dtype=np.float64).astype(np.float32)
    rng = np.random.default_rng(0)
    q = rng.standard_normal((x.shape[1], min(p + oversample, x.shape[1]))).astype(np.float32)

    def a_times(m: np.ndarray) -> np.ndarray:  # (x - 1 mu^T) m
        return x @ m - mu @ m

    def at_times(m: np.ndarray) -> np.ndarray:  # (x - 1 mu^T)^T m
        return x.T @ m - np.outer(mu, m.sum(axis=0))

    def orth(m: np.ndarray) -> np.ndarray:
        return _orthonormal_columns(m).astype(np.float32)

    y = orth(a_times(q))
    for _ in range(n_iter):
        checkpoint()  # a cancelled worker stops between power iterations
        y = orth(a_times(orth(at_times(y))))
    b = at_times(y).T  # (l, D) = y^T (x - 1 mu^T)
    _, _, vt = np.linalg.svd(b.astype(np.float64), full_matrices=False)
    return mu.astype(np.float64), vt[:p]


def _orthonormal_columns(m: np.ndarray) -> np.ndarray:
    """(M, l) -> (M, l) float64 orthonormal basis of its columns by CholeskyQR2 (two Gram-Cholesky passes:
    two (l, l) products instead of LAPACK's QR, which takes ~0.1 s per (10k, 13) call on a busy 2-core CPU);
    Householder QR when the Gram matrix is singular."""
    from scipy.linalg import solve_triangular

    q = m.astype(np.float64)
    try:
        for _ in range(2):
            chol = np.linalg.cholesky(q.T @ q)
            q = solve_triangular(chol, q.T, lower=True).T
    except np.linalg.LinAlgError:
        return np.linalg.qr(m.astype(np.float64))[0]
    return q


def pca_rgb(features: np.ndarray) -> np.ndarray:
    """(N, D) -> (N, 3) float in [0, 1]: first three principal components, each min-max scaled.

    Fewer than 3 components (N or D < 3) leave the missing channels at 0.5.
    """
    return scores_rgb(principal_components(features, 3, dtype=np.float64))


def scores_rgb(pcs: np.ndarray) -> np.ndarray:
    """(N, p<=3) PCA scores -> (N, 3) float in [0, 1], each component min-max scaled (missing ones 0.5)."""
    out = np.full((len(pcs), 3), 0.5)
    p = pcs.shape[1]
    if p == 0:
        return out
    lo, span = pcs.min(0), np.ptp(pcs, axis=0)
    out[:, :p] = np.where(span > 0, (pcs - lo) / np.where(span > 0, span, 1), 0.5)
    return out


def kmeans_labels(features: np.ndarray, k: int, seed: int = 0, norms: np.ndarray | None = None) -> np.ndarray:
    """(N, D) -> (N,) int labels in 1..k (0 is kept for background), k-means on L2-normalised features.

    ``norms``: the rows' :func:`row_norms` when the caller has them (one pass over the features less).

    Up to :data:`EXACT_MAX_ELEMENTS` elements, k-means of all rows from :data:`KMEANS_INITS_SMALL` seedings.
    Above, k-means of :data:`KMEANS_FIT_ROWS` random rows from :data:`KMEANS_INITS` seedings, then every row
    goes to its nearest centre. Seedings are greedy k-means++ in float32 (scikit-learn's upcasts the distances
    to float64: ~5 s for 20k x 1536 on 2 cores), each refined by :data:`KMEANS_SCREEN_ITER` iterations of
    :func:`metrics.kmeans.lloyd`; the lowest-inertia one is refined on, up to :data:`KMEANS_MAX_ITER`
    iterations, until an iteration gains less than :data:`KMEANS_INERTIA_TOL` of the inertia. At most
    ``inits * 6 + 51`` distance passes over the rows whatever the data: on features without strong clusters the
    inertia is then within ~0.01 % of running every seeding to scikit-learn's convergence (see
    ``benchmarks/feature_maps.py``). Deterministic for a given ``seed``.
    """
    x = np.asarray(features)
    k = max(1, min(int(k), len(x)))
    small = x.size <= EXACT_MAX_ELEMENTS
    norms = row_norms(x) if norms is None else norms
    rows = None if small else _fit_rows(len(x), KMEANS_FIT_ROWS, seed)
    sample = (x if rows is None else x[rows]).astype(np.float32)
    sample /= (norms if rows is None else norms[rows])[:, None].astype(np.float32)
    centres, labels = fit_kmeans(sample, k, KMEANS_INITS_SMALL if small else KMEANS_INITS, seed)
    if small:
        return labels + 1
    return nearest_centre(x, centres, norms) + 1


def fit_kmeans(x: np.ndarray, k: int, inits: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(M, D) float32 unit rows -> (k, D) centres and (M,) labels 0..k-1: ``inits`` k-means++ seedings, each
    screened by :data:`KMEANS_SCREEN_ITER` Lloyd iterations, the lowest inertia refined on (see
    :func:`kmeans_labels`)."""
    rng = np.random.default_rng(seed)
    seeds = [kmeans_plusplus_unit(x, k, rng) for _ in range(inits)]
    fits = [lloyd(x, s, KMEANS_SCREEN_ITER, inertia_tol=KMEANS_INERTIA_TOL) for s in seeds]
    best = min(fits, key=lambda fit: fit[2])[0]
    centres, labels, _ = lloyd(x, best, KMEANS_MAX_ITER, inertia_tol=KMEANS_INERTIA_TOL)
    return centres, labels


def kmeans_plusplus_unit(x: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """(k, D) greedy k-means++ seeds (Arthur & Vassilvitskii 2007; 2 + ln k trials per centre, as
    scikit-learn) of (M, D) float32 unit-norm rows, with squared distances ``2 - 2 cos`` in float32."""
    n, trials = len(x), 2 + int(np.log(k))
    centres = [int(rng.integers(n))]
    d2 = np.maximum(2.0 - 2.0 * (x @ x[centres[0]]), 0.0)
    for _ in range(1, k):
        checkpoint()
        total = float(d2.sum())
        p = d2 / total if total > 0 else None
        cand = rng.choice(n, size=trials, p=p)
        new = np.minimum(d2[:, None], np.maximum(2.0 - 2.0 * (x @ x[cand].T), 0.0))  # (M, trials)
        best = int(new.sum(axis=0).argmin())
        centres.append(int(cand[best]))
        d2 = new[:, best]
    return x[centres].copy()


def row_norms(x: np.ndarray) -> np.ndarray:
    """(N, D) -> (N,) float64 L2 norms (zero rows get 1e-12), without an (N, D) temporary."""
    return np.sqrt(np.maximum(np.einsum("ij,ij->i", x, x, dtype=np.float64), 1e-24))


def nearest_centre(
    x: np.ndarray, centres: np.ndarray, norms: np.ndarray | None = None, chunk: int = 65_536
) -> np.ndarray:
    """(N, D), (k, D) -> (N,) int64 index of each row's nearest centre (squared L2), in row chunks.

    With ``norms`` (N,), the rows are taken as divided by them (L2-normalised) without forming that copy.
    """
    return assign(x, centres, chunk, norms)[0]


def l2_normalise(features: np.ndarray, dtype: type = np.float64) -> np.ndarray:
    """(N, D) -> (N, D) rows of unit L2 norm as ``dtype`` (zero rows stay zero)."""
    x: np.ndarray = np.asarray(features, dtype=dtype)
    return x / row_norms(x).astype(dtype)[:, None]


def cosine_to(features: np.ndarray, index: int) -> np.ndarray:
    """(N, D) -> (N,) float32 cosine similarity of every row to row ``index`` (one matrix-vector product,
    no normalised copy of the matrix), clipped to [-1, 1] (float rounding gives 1.0000001 for the row itself)."""
    x = np.asarray(features)
    if x.dtype not in (np.float32, np.float64):
        x = x.astype(np.float32)
    norms = row_norms(x)
    return np.clip((x @ x[index]) / (norms * norms[index]), -1.0, 1.0).astype(np.float32)
