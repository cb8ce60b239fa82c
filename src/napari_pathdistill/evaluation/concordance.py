"""Lin's concordance correlation coefficient and the BreastBm slide-level robustness protocol.

BreastBm (Filiot et al. 2025): every slide is represented by the mean of its tile features, a logistic
regression predicts the slide label, and robustness is the CCC between the predicted probabilities of the same
tissue block digitised under two conditions (stain or scanner).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from napari_pathdistill.errors import EvaluationError


def lins_ccc(x: np.ndarray, y: np.ndarray) -> float:
    """Lin's concordance correlation coefficient.

    ``ccc = 2 cov(x, y) / (var(x) + var(y) + (mean(x) - mean(y))^2)`` with population (1/n) moments, as in
    Lin (1989). 1 = perfect agreement, 0 = none, -1 = perfect reversal.

    Args:
        x: (n,) predictions under condition 1.
        y: (n,) predictions of the same blocks under condition 2.
    """
    x, y = np.asarray(x, dtype=np.float64).ravel(), np.asarray(y, dtype=np.float64).ravel()
    if x.shape != y.shape or x.size < 2:
        raise EvaluationError(f"CCC needs two equal-length vectors of >= 2 values, got {x.size} and {y.size}")
    mx, my = x.mean(), y.mean()
    cov = np.mean((x - mx) * (y - my))
    denom = x.var() + y.var() + (mx - my) ** 2
    return float(2 * cov / denom) if denom > 0 else float("nan")


def mean_pool(tile_features: Sequence[np.ndarray]) -> np.ndarray:
    """Slide embeddings by mean pooling: list of (N_i, D) -> (S, D)."""
    return np.stack([np.asarray(f, dtype=np.float64).mean(0) for f in tile_features])


def fit_slide_classifier(slide_features: np.ndarray, labels: np.ndarray, *, seed: int = 0, c: float = 1.0):
    """Logistic regression on standardised mean-pooled slide features (S, D) -> fitted sklearn pipeline."""
    if len(np.unique(labels)) < 2:
        raise EvaluationError("slide labels need at least two classes to train the slide classifier")
    from sklearn.linear_model import LogisticRegression  # here: the Evaluate dock imports this module
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    clf = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=2000, random_state=seed))
    return clf.fit(slide_features, labels)


def cross_condition_ccc(
    clf, conditions: Mapping[str, np.ndarray], reference: str | None = None
) -> dict[str, float]:
    """CCC of predicted positive-class probabilities between conditions for the same blocks.

    Args:
        clf: fitted classifier with ``predict_proba``.
        conditions: ``{condition: (S, D) mean-pooled features}``; row s is the same tissue block everywhere.
        reference: condition compared with all others; None compares every unordered pair.

    Returns:
        ``{"condA|condB": ccc}``.
    """
    probs = {k: clf.predict_proba(v)[:, 1] for k, v in conditions.items()}
    names = list(probs)
    if reference is not None:
        pairs = [(reference, n) for n in names if n != reference]
    else:
        pairs = [(a, b) for i, a in enumerate(names) for b in names[i + 1 :]]
    return {f"{a}|{b}": lins_ccc(probs[a], probs[b]) for a, b in pairs}


def slide_labels(raw: Sequence[str]) -> list[int | str]:
    """Class labels read from a CSV: integers when every label is one (``0``/``1``), else the text itself
    (``tumour``/``normal``), stripped.

    Raises:
        EvaluationError: an empty label.
    """
    labels = [str(x).strip() for x in raw]
    if any(not x for x in labels):
        raise EvaluationError(f"slide {labels.index('') + 1} has an empty label; give every slide its class")
    try:
        return [int(x) for x in labels]
    except ValueError:
        return list(labels)


def positive_class(labels: Sequence[object]) -> object:
    """The class whose predicted probability the CCC compares: the classifier's second class (sorted)."""
    classes = sorted(set(labels), key=lambda c: (isinstance(c, str), c))
    if len(classes) < 2:
        raise EvaluationError("slide labels need at least two classes to train the slide classifier")
    return classes[1]


def breastbm_ccc(
    slides: Sequence[Mapping[str, object]], train_condition: str, *, seed: int = 0
) -> dict[str, float]:
    """BreastBm robustness protocol on slide records.

    Args:
        slides: dicts with ``block`` (tissue block id), ``condition`` (stain/scanner), ``label`` (a class:
            0/1 or text; the CCC compares P(:func:`positive_class`)) and
            ``features`` ((N_i, D) tile features).
        train_condition: condition whose slides train the mean-pooling logistic regression.
        seed: random seed of the classifier.

    Returns:
        ``{"condA|condB": ccc}`` over the blocks present in both conditions of each pair.
    """
    train = [s for s in slides if s["condition"] == train_condition]
    if not train:
        raise EvaluationError(f"no slide has condition {train_condition!r}")
    clf = fit_slide_classifier(
        mean_pool([np.asarray(s["features"]) for s in train]),
        np.asarray([s["label"] for s in train]),
        seed=seed,
    )
    by_cond: dict[str, dict[object, np.ndarray]] = {}
    for s in slides:
        by_cond.setdefault(str(s["condition"]), {})[s["block"]] = np.asarray(s["features"])
    names = sorted(by_cond)
    out = {}
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            blocks = sorted(set(by_cond[a]) & set(by_cond[b]), key=str)
            if len(blocks) < 2:
                continue
            pa = clf.predict_proba(mean_pool([by_cond[a][k] for k in blocks]))[:, 1]
            pb = clf.predict_proba(mean_pool([by_cond[b][k] for k in blocks]))[:, 1]
            out[f"{a}|{b}"] = lins_ccc(pa, pb)
    return out
