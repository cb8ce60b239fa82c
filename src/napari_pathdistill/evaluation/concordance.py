"""Lin's concordance correlation coefficient and the BreastBm slide-level robustness protocol.

BreastBm (Filiot et al. 2025): every slide is represented by the mean of its tile features, a logistic
regression predicts the slide label, and robustness is the CCC between the predicted probabilities of the same
tissue block digitised under two conditions (stain or scanner).
"""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from pathlib import Path

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


SLIDE_COLUMNS = ("block", "condition", "label", "path")


def read_slides_csv(path: str | Path) -> list[dict[str, object]]:
    """The slide records of a ``block,condition,label,path`` CSV, features loaded (paths relative to the CSV).

    Raises:
        EvaluationError: a missing column, no rows, an empty cell, or an unreadable features file.
    """
    from napari_pathdistill.evaluation.features_io import load_features

    path = Path(path)
    if not path.is_file():
        raise EvaluationError(f"slides CSV not found: {path} (give a block,condition,label,path CSV)")
    with path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        rows = [{(k or "").strip().lower(): (v or "").strip() for k, v in r.items()} for r in reader]
        header = [(h or "").strip().lower() for h in reader.fieldnames or []]
    missing = [c for c in SLIDE_COLUMNS if c not in header]
    if missing:
        raise EvaluationError(f"{path.name} needs the columns {','.join(SLIDE_COLUMNS)}; missing {missing}")
    if not rows:
        raise EvaluationError(f"{path.name} has no slides: add one line per slide")
    for i, r in enumerate(rows, start=2):
        empty = [c for c in ("block", "condition", "path") if not r[c]]
        if empty:
            raise EvaluationError(f"{path.name} line {i}: {empty[0]} is empty")
    labels = slide_labels([r["label"] for r in rows])
    return [
        {"block": r["block"], "condition": r["condition"], "label": label,
         "features": load_features(path.parent / r["path"])[0]}
        for r, label in zip(rows, labels, strict=True)
    ]  # fmt: skip


def positive_class(labels: Sequence[object]) -> object:
    """The class whose predicted probability the CCC compares: the classifier's second class (sorted)."""
    classes = sorted(set(labels), key=lambda c: (isinstance(c, str), c))
    if len(classes) < 2:
        raise EvaluationError("slide labels need at least two classes to train the slide classifier")
    return classes[1]


def _out_of_fold_probs(
    slides: Sequence[Mapping[str, object]], train_condition: str, n_splits: int, seed: int
) -> tuple[dict[str, dict[object, float]], int]:
    """P(positive class) of every slide from a classifier that never saw its block.

    The train condition's blocks are split into stratified folds; each fold's classifier is fitted on the
    train-condition slides of the other blocks and predicts the held-out blocks under every condition. Blocks
    absent from the train condition are predicted by the classifier of all train-condition blocks.

    Returns:
        ``{condition: {block: probability}}`` and the number of folds used.
    """
    from sklearn.model_selection import StratifiedKFold

    train = [s for s in slides if s["condition"] == train_condition]
    if not train:
        present = sorted({str(s["condition"]) for s in slides})
        raise EvaluationError(f"no slide has condition {train_condition!r} (the conditions are {present})")
    labels = np.asarray([s["label"] for s in train])
    _, counts = np.unique(labels, return_counts=True)
    if len(counts) < 2 or counts.min() < 2:
        raise EvaluationError(
            f"the {train_condition!r} slides need >= 2 blocks of each of >= 2 classes (classes {counts.tolist()}) "
            "so that every block is predicted by a classifier trained without it"
        )
    folds = int(min(n_splits, counts.min()))
    x = mean_pool([np.asarray(s["features"]) for s in train])
    fold_of = {s["block"]: -1 for s in slides}
    models = []
    for i, (tr, te) in enumerate(StratifiedKFold(folds, shuffle=True, random_state=seed).split(x, labels)):
        models.append(fit_slide_classifier(x[tr], labels[tr], seed=seed))
        fold_of.update({train[j]["block"]: i for j in te})
    models.append(fit_slide_classifier(x, labels, seed=seed))  # index -1: blocks never trained on
    probs: dict[str, dict[object, float]] = {}
    for s in slides:
        model = models[fold_of[s["block"]]]
        p = float(model.predict_proba(mean_pool([np.asarray(s["features"])]))[0, 1])
        probs.setdefault(str(s["condition"]), {})[s["block"]] = p
    return probs, folds


def _check_one_width(slides: Sequence[Mapping[str, object]]) -> None:
    """Every slide's features (N_i, D) of one width D (one model), else an error naming examples of each width
    (two widths ended in numpy's or scikit-learn's shape traceback naming no slide)."""
    widths: dict[int, list[str]] = {}
    for s in slides:
        f = np.asarray(s["features"])
        width = f.shape[1] if f.ndim == 2 else -1
        widths.setdefault(width, []).append(f"{s['block']} {s['condition']}")
    if len(widths) > 1:
        parts = "; ".join(f"D={d}: {len(n)} slide(s), e.g. {n[0]!r}" for d, n in sorted(widths.items()))
        raise EvaluationError(
            f"the slides' features have different widths ({parts}): every slide must be embedded by the same "
            "model (D=-1: not an (N, D) matrix)"
        )


def breastbm_ccc(
    slides: Sequence[Mapping[str, object]], train_condition: str, *, seed: int = 0, n_splits: int = 5
) -> dict[str, float]:
    """BreastBm robustness protocol on slide records.

    In the paper the classifier is trained on another cohort (TCGA-BRCA) and never sees the evaluated blocks.
    Here it is trained on the ``train_condition`` slides of the same blocks, so the predictions are
    cross-fitted (:func:`_out_of_fold_probs`): a classifier fitted on a block would have memorised it, and its
    predictions of that block would agree across conditions even without any signal in the features.

    Args:
        slides: dicts with ``block`` (tissue block id), ``condition`` (stain/scanner), ``label`` (a class:
            0/1 or text; the CCC compares P(:func:`positive_class`)) and
            ``features`` ((N_i, D) tile features); one slide per block and condition.
        train_condition: condition whose slides train the mean-pooling logistic regression.
        seed: random seed of the folds and the classifier.
        n_splits: block folds of the cross-fitting (capped at the smallest class's blocks).

    Returns:
        ``{"condA|condB": ccc}`` over the blocks present in both conditions of each pair.

    Raises:
        EvaluationError: no slide of ``train_condition``, fewer than 2 blocks of a class there, or a block
            listed twice under one condition.
    """
    _check_one_width(slides)
    seen: set[tuple[str, object]] = set()
    for s in slides:
        key = (str(s["condition"]), s["block"])
        if key in seen:
            raise EvaluationError(f"block {key[1]!r} has two slides under condition {key[0]!r}; give one")
        seen.add(key)
    by_cond, _ = _out_of_fold_probs(slides, train_condition, n_splits, seed)
    names = sorted(by_cond)
    out = {}
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            blocks = sorted(set(by_cond[a]) & set(by_cond[b]), key=str)
            if len(blocks) < 2:
                continue
            pa, pb = (np.asarray([by_cond[c][k] for k in blocks]) for c in (a, b))
            out[f"{a}|{b}"] = lins_ccc(pa, pb)
    return out
