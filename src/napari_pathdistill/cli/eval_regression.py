"""``pathdistill eval regression``: HEST-bench's PCA + ridge on feature and target files, with group folds."""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import numpy as np

from napari_pathdistill.errors import EvaluationError

#: a targets-CSV column with one of these names holds the group (patient/slide) of each row, not a target
GROUP_COLUMNS = ("group", "patient")


def load_matrix(path: str, what: str = "features") -> np.ndarray:
    """(N, D) array from ``.npy``, ``.csv`` with a header line, or a features ``.h5``.

    Raises:
        EvaluationError: no such file, or a CSV cell that is not a number (was numpy's traceback).
    """
    from napari_pathdistill.evaluation.features_io import load_features

    p = Path(path)
    if not p.is_file():
        raise EvaluationError(f"{what} file not found: {p}")
    if p.suffix == ".csv":
        try:
            return np.loadtxt(p, delimiter=",", skiprows=1, ndmin=2)
        except ValueError as err:
            raise EvaluationError(f"{p}: {what} must be numbers after one header line ({err})") from None
    return np.load(p, allow_pickle=False) if p.suffix == ".npy" else load_features(p)[0]


def _csv_targets(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """Targets of a CSV and its ``group``/``patient`` column (None when it has none)."""
    with open(path, newline="") as fh:
        rows = list(csv.reader(fh))
    header = [h.strip().lower() for h in rows[0]] if rows else []
    gcol = next((i for i, h in enumerate(header) if h in GROUP_COLUMNS), None)
    if gcol is None:
        return load_matrix(str(path), "targets"), None
    try:
        y = np.array([[float(v) for i, v in enumerate(r) if i != gcol] for r in rows[1:]], ndmin=2)
    except ValueError as err:
        raise EvaluationError(f"{path}: a target value is not a number ({err})") from None
    return y, np.array([r[gcol].strip() for r in rows[1:]])


def _group_file(path: str) -> np.ndarray:
    """Group ids, one per row: a 1-D ``.npy``, or a text/CSV file of one id per line (header allowed)."""
    p = Path(path)
    if p.suffix == ".npy":
        return np.load(p, allow_pickle=False).reshape(-1)
    lines = [ln.split(",")[0].strip() for ln in p.read_text().splitlines() if ln.strip()]
    return np.array(lines[1:] if lines and lines[0].lower() in GROUP_COLUMNS else lines)


def targets_and_groups(targets: str, groups: str | None) -> tuple[np.ndarray, np.ndarray | None]:
    """The (N, T) targets and (N,) group ids (``--groups`` wins over a targets-CSV column)."""
    p = Path(targets)
    if not p.is_file():
        raise EvaluationError(f"targets file not found: {p}")
    y, g = _csv_targets(p) if p.suffix == ".csv" else (load_matrix(targets, "targets"), None)
    return y, _group_file(groups) if groups else g


def cmd_regression(args: argparse.Namespace) -> int:
    from napari_pathdistill.evaluation.probes import pca_ridge
    from napari_pathdistill.evaluation.report import write_json

    y, groups = targets_and_groups(args.targets, args.groups)
    if groups is None:
        print(
            "note: tile-level KFold (shuffled): spots of one patient fall in both train and test folds, "
            "which HEST's patient-level splits avoid; give --groups or a group/patient column",
            file=sys.stderr,
        )
    x = load_matrix(args.features)
    res = pca_ridge(
        x, y, n_components=args.components, alpha=args.alpha, n_splits=args.n_splits, seed=args.seed,
        groups=groups,
    )  # fmt: skip
    n_comp, lo, hi = res.n_components or 0, float(res.alphas.min()), float(res.alphas.max())
    # folds whose training sets cap the PCA differently get HEST's alpha of their own components
    said = f"{lo:.4g}" if lo == hi else f"{lo:.4g}-{hi:.4g} by fold"
    folds = f"GroupKFold({args.n_splits})" if groups is not None else f"KFold({args.n_splits}, shuffled)"
    capped = "" if n_comp == args.components else f", capped from {args.components}"
    print(
        f"PCA({n_comp}{capped})+ridge(alpha={said}, no intercept), {folds}: "
        f"mean Pearson r {res.mean:.3f} +- {res.std:.3f}"
    )
    out = {"pearson_mean": res.mean, "folds": res.fold_scores.tolist(), "per_target": res.per_target.tolist()}
    out |= {"n_components": n_comp, "alpha": lo if lo == hi else None, "alpha_per_fold": res.alphas.tolist()}
    out["splits"] = "group" if groups is not None else "tile"
    print(f"wrote {write_json(Path(args.out) / 'regression.json', out)}")
    return 0
