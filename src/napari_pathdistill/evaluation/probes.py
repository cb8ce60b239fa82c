"""Frozen-feature probes: logistic-regression linear probe, kNN, and HEST-style PCA + ridge regression.

All use stratified / plain (or, for the regression, group) K-fold cross-validation with fixed seeds, so a run is
reproducible bit for bit.
Classification is scored by balanced accuracy (mean per-class recall), regression by Pearson r per target.
scikit-learn is imported by each function, not by the module: the Evaluate dock imports this module, and a napari
session should not pay ~0.9 s and ~90 MB for scikit-learn before an evaluation runs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np

from napari_pathdistill.errors import EvaluationError
from napari_pathdistill.progress import checkpoint, interruptible


@dataclass(frozen=True)
class ProbeResult:
    """Cross-validated score of one probe.

    Attributes:
        name: "linear", "knn" or "ridge".
        fold_scores: (n_folds,) balanced accuracy (classification) or mean Pearson r (regression) per fold.
        per_target: (T,) out-of-fold Pearson r per regression target (empty for classifiers).
        predictions: (N,) out-of-fold predicted label of every sample (classifiers; empty for regression):
            each sample is predicted by the one fold model that did not see it, so ``predictions != labels``
            names the misclassified samples.
        k: neighbours the kNN probe actually used (``k`` capped, see :func:`knn_probe`); None for the others.
        n_components: PCA components the ridge probe used (the smallest over folds, after capping).
        alphas: (n_folds,) ridge strength each fold used (HEST's depends on its fold's components); empty for
            the classifiers.
    """

    name: str
    fold_scores: np.ndarray
    per_target: np.ndarray
    predictions: np.ndarray = field(default_factory=lambda: np.empty(0))
    k: int | None = None
    n_components: int | None = None
    alphas: np.ndarray = field(default_factory=lambda: np.empty(0))

    @property
    def mean(self) -> float:
        """Mean of the fold scores."""
        return float(np.mean(self.fold_scores))

    @property
    def std(self) -> float:
        """Standard deviation of the fold scores."""
        return float(np.std(self.fold_scores))


def _check_rows(x: np.ndarray, y: np.ndarray, what: str) -> None:
    """(N, D) features and N rows of ``what`` (labels or targets), all finite.

    Raises:
        EvaluationError: features not 2-D, a row count that differs (never reshaped to fit), or NaN/inf.
    """
    if x.ndim != 2:
        raise EvaluationError(f"features must be an (N, D) matrix, got shape {x.shape}")
    if len(y) != len(x):
        raise EvaluationError(
            f"{len(x)} feature rows but {len(y)} rows of {what}: give one row of {what} per feature row, "
            "in the same order"
        )
    for name, arr in (("features", x), (what, y)):
        if arr.dtype.kind in "fc" and not np.isfinite(arr).all():
            bad = int((~np.isfinite(arr)).reshape(len(arr), -1).any(axis=1).sum())
            raise EvaluationError(f"{bad} of {len(arr)} rows of {name} hold NaN or inf values")


def _folds(
    labels: np.ndarray, n_splits: int, seed: int, groups: np.ndarray | None = None
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Stratified folds of the samples, or with ``groups`` (patient/slide ids) ``StratifiedGroupKFold``: no
    group in both the training and the test set of a fold."""
    _, counts = np.unique(labels, return_counts=True)
    if len(counts) < 2:
        raise EvaluationError("classification probes need at least two classes")
    if counts.min() < n_splits:
        raise EvaluationError(
            f"the smallest class has {counts.min()} samples, fewer than n_splits={n_splits}; lower n_splits"
        )
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

    if groups is None:
        skf = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed)
        return list(skf.split(np.zeros(len(labels)), labels))
    groups = np.asarray(groups)
    if len(groups) != len(labels):
        raise EvaluationError(
            f"got {len(groups)} group ids for {len(labels)} samples; give one group per row"
        )
    if len(np.unique(groups)) < n_splits:
        raise EvaluationError(
            f"{len(np.unique(groups))} groups (patients) are fewer than n_splits={n_splits}; lower n_splits"
        )
    sgkf = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    folds = list(sgkf.split(np.zeros(len(labels)), labels, groups))
    for train, _ in folds:
        if len(np.unique(labels[train])) < len(counts):
            raise EvaluationError(
                "a training fold lacks a class: every patient of that class fell in one test fold; "
                "lower n_splits or add patients"
            )
    return folds


def check_folds(
    labels: np.ndarray, *, n_splits: int = 5, seed: int = 0, groups: np.ndarray | None = None
) -> None:
    """The probes' fold checks on the (N,) labels (and patient ``groups``) alone, so that a caller can run them
    before any tile is embedded: ``eval probe --n-splits 10`` with a class of 8 tiles failed after embedding them all.

    Raises:
        EvaluationError: as the probes (a class with fewer tiles, or fewer patients, than ``n_splits``; a training
            fold without a class).
    """
    _folds(np.asarray(labels), n_splits, seed, groups)


def _classify(
    name: str,
    model,
    x: np.ndarray,
    y: np.ndarray,
    n_splits: int,
    seed: int,
    groups: np.ndarray | None,
    progress: Callable[[float], None] | None = None,
) -> ProbeResult:
    """Fit and score ``model`` per fold; each fold reports its fraction done. scikit-learn's fit and predict take
    no callback (a fold of 100,000 tiles: minutes): they run :func:`~napari_pathdistill.progress.interruptible`,
    so in a cancel scope a Cancel stops them at their next Python call (an L-BFGS loss evaluation, a distance
    chunk) with the numbers of a plain fit."""
    from sklearn.metrics import balanced_accuracy_score

    _check_rows(x, y, "labels")
    scores, predictions = [], np.empty(len(y), dtype=y.dtype)
    folds = _folds(y, n_splits, seed, groups)
    for i, (train, test) in enumerate(folds):
        checkpoint()
        with interruptible():
            model.fit(x[train], y[train])
            predictions[test] = model.predict(x[test])
        scores.append(balanced_accuracy_score(y[test], predictions[test]))
        if progress is not None:
            progress((i + 1) / len(folds))
    return ProbeResult(name, np.asarray(scores), np.empty(0), predictions)


def linear_probe(
    features: np.ndarray,
    labels: np.ndarray,
    *,
    n_splits: int = 5,
    seed: int = 0,
    c: float = 1.0,
    groups: np.ndarray | None = None,
    progress: Callable[[float], None] | None = None,
) -> ProbeResult:
    """Logistic regression on standardised (N, D) features; balanced accuracy per stratified fold (per
    stratified group fold with ``groups``: (N,) patient/slide ids, so no patient is in train and test).
    ``progress(fraction)`` is called after each fold (minutes each for 100,000 tiles). In a
    ``progress.cancel_scope`` a Cancel stops the fit within a loss evaluation (``progress.interruptible``); the
    scores are those of an uncancellable run, bit for bit."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = make_pipeline(
        StandardScaler(), LogisticRegression(C=c, max_iter=3000, class_weight="balanced", random_state=seed)
    )
    x, y = np.asarray(features), np.asarray(labels)
    return _classify("linear", model, x, y, n_splits, seed, groups, progress)


def knn_probe(
    features: np.ndarray,
    labels: np.ndarray,
    *,
    k: int = 20,
    n_splits: int = 5,
    seed: int = 0,
    groups: np.ndarray | None = None,
    progress: Callable[[float], None] | None = None,
) -> ProbeResult:
    """Distance-weighted cosine kNN on (N, D) features; balanced accuracy per stratified fold.

    ``k`` is capped at the smallest class count of a training fold, so that on small, imbalanced sets (e.g. 8
    background vs 26 tissue tiles) the minority class can still win a vote instead of the probe collapsing
    to the majority class. The result's ``k`` is the value used. ``groups`` and ``progress`` as
    :func:`linear_probe`.

    Raises:
        EvaluationError: ``k < 1`` (and the errors of the folds: one class, too few samples per class).
    """
    if k < 1:
        raise EvaluationError(f"the kNN probe needs k >= 1 neighbours, got {k}")
    x, y = np.asarray(features, dtype=np.float64), np.asarray(labels)
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    _, counts = np.unique(y, return_counts=True)
    k_eff = max(1, min(k, int(counts.min() * (n_splits - 1) // n_splits)))
    from sklearn.neighbors import KNeighborsClassifier

    model = KNeighborsClassifier(n_neighbors=k_eff, metric="cosine", weights="distance")
    return replace(_classify("knn", model, x, y, n_splits, seed, groups, progress), k=k_eff)


def pearson_per_column(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    """(N, T), (N, T) -> (T,) Pearson r per column (NaN for a constant column)."""
    a = y_true - y_true.mean(0)
    b = y_pred - y_pred.mean(0)
    den = np.linalg.norm(a, axis=0) * np.linalg.norm(b, axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (a * b).sum(0) / den, np.nan)


def _regression_folds(
    n: int, n_splits: int, seed: int, groups: np.ndarray | None
) -> list[tuple[np.ndarray, np.ndarray]]:
    """GroupKFold over ``groups`` (patients/slides: no group in two folds), else shuffled tile-level KFold."""
    from sklearn.model_selection import GroupKFold, KFold

    if groups is None:
        return list(KFold(n_splits=n_splits, shuffle=True, random_state=seed).split(np.zeros(n)))
    groups = np.asarray(groups)
    if len(groups) != n:
        raise EvaluationError(f"got {len(groups)} group ids for {n} samples; give one group per row")
    if len(np.unique(groups)) < n_splits:
        raise EvaluationError(
            f"{len(np.unique(groups))} groups (patients) are fewer than n_splits={n_splits}; lower n_splits"
        )
    return list(GroupKFold(n_splits=n_splits).split(np.zeros(n), groups=groups))


def hest_alpha(n_components: int, n_targets: int) -> float:
    """HEST-bench's ridge strength (``trainer.py::train_test_reg``): ``100 / (n_components * n_targets)``."""
    return 100.0 / (n_components * n_targets)


def pca_ridge(
    features: np.ndarray,
    targets: np.ndarray,
    *,
    n_components: int = 256,
    alpha: float | None = None,
    n_splits: int = 5,
    seed: int = 0,
    groups: np.ndarray | None = None,
) -> ProbeResult:
    """HEST-bench regression: StandardScaler, PCA(256) (capped at min(n_train, D)), ridge without intercept.

    As HEST (``benchmark.py::predict_single_split`` and ``trainer.py::train_test_reg``): the ridge is
    ``Ridge(solver="lsqr", alpha=100 / (n_components * n_targets), fit_intercept=False)`` and the score is the
    mean over folds of the per-target Pearson mean. HEST uses predefined patient-level splits: pass ``groups``
    (one patient/slide id per sample) for GroupKFold; without it, tiles of one patient can be in train and test.

    Args:
        features: (N, D) tile embeddings.
        targets: (N,) or (N, T) continuous targets (e.g. log1p gene expression of the top-50 genes).
        n_components: PCA dimension before capping.
        alpha: ridge strength; None: HEST's ``100 / (components used * T)``.
        n_splits: folds.
        seed: random seed (shuffled KFold, PCA, lsqr).
        groups: (N,) group ids for GroupKFold, or None for a shuffled tile-level KFold.

    Returns:
        fold scores = mean Pearson r over targets per fold; ``per_target`` = out-of-fold r per target;
        ``n_components`` = components used.
    """
    from sklearn.decomposition import PCA
    from sklearn.linear_model import Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x = np.asarray(features, dtype=np.float64)
    y = np.asarray(targets, dtype=np.float64)
    _check_rows(x, y, "targets")
    y = y.reshape(len(x), -1)
    oof, scores, used, alphas = np.zeros_like(y), [], [], []
    for train, test in _regression_folds(len(x), n_splits, seed, groups):
        n_comp = min(n_components, len(train), x.shape[1])
        a = hest_alpha(n_comp, y.shape[1]) if alpha is None else alpha
        ridge = Ridge(alpha=a, solver="lsqr", fit_intercept=False, max_iter=1000, random_state=seed)
        model = make_pipeline(StandardScaler(), PCA(n_components=n_comp, random_state=seed), ridge)
        oof[test] = model.fit(x[train], y[train]).predict(x[test]).reshape(len(test), -1)
        scores.append(np.nanmean(pearson_per_column(y[test], oof[test])))
        used.append(n_comp)
        alphas.append(a)
    return ProbeResult("ridge", np.asarray(scores), pearson_per_column(y, oof), n_components=min(used),
                       alphas=np.asarray(alphas))  # fmt: skip
