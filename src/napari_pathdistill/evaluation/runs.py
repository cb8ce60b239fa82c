"""The Evaluate widget's runs (pure core, no Qt): each yields ``Progress`` items, then one ``Report``.

* :func:`iter_pair_robustness` - PLISM-style pair metrics (mean cosine, top-k accuracy) over a CSV of slide pairs
  (``manifest.read_pairs``), each pair registered and tiled by ``inference.pair_similarity``; it lives in
  ``evaluation.pair_robustness`` (per-pair resume, partial report on cancel) and is re-exported here;
* :func:`iter_linear_probe` - ``probes.linear_probe`` (balanced accuracy, stratified CV) on labelled tiles;
* :func:`iter_teacher_student` - linear CKA and retrieval overlap of teacher and student on the same tiles.

Save a run's report with ``Report.save`` (``<name>.csv``, ``.json``, ``.png``, atomically).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import TypeVar

import numpy as np

from napari_pathdistill.errors import Cancelled, EvaluationError
from napari_pathdistill.evaluation.labelled_tiles import (
    check_probe_labels,
    iter_embed_tiles,
    list_labelled_tiles,
    tile_groups,
)
from napari_pathdistill.evaluation.pair_robustness import iter_pair_robustness
from napari_pathdistill.evaluation.probes import check_folds, linear_probe
from napari_pathdistill.evaluation.report import Cell, Report
from napari_pathdistill.metrics.agreement import knn_overlap, knn_overlap_chance, linear_cka
from napari_pathdistill.metrics.pairs import MAX_TOPK_CHANCE
from napari_pathdistill.models.embedding_model import EmbeddingModel
from napari_pathdistill.progress import Progress, cancel_scope, raise_if_cancelled, relabel, reported

T = TypeVar("T")

__all__ = ["iter_linear_probe", "iter_pair_robustness", "iter_teacher_student", "knn_overlap_note"]


def _check(cancel: threading.Event | None, what: str) -> None:
    raise_if_cancelled(cancel, f"{what} cancelled; no report was written.")


def _embed(
    model: EmbeddingModel, paths: list[Path], stage: str, cancel: threading.Event | None
) -> Generator[Progress, None, np.ndarray]:
    """Embed tile files (``labelled_tiles.iter_embed_tiles``), re-labelling progress and checking ``cancel``."""
    _check(cancel, stage)
    try:
        feats = yield from relabel(iter_embed_tiles(model, paths), stage, cancel=cancel)
    except Cancelled as exc:
        raise Cancelled(f"{stage} cancelled; no report was written.") from exc
    if feats is None:
        raise EvaluationError(f"{stage}: no features were produced")
    return feats


def _step(
    call: Callable[[Callable[[float], None]], T], stage: str, what: str, cancel: threading.Event | None
) -> Generator[Progress, None, T]:
    """A long numerical call after the embeddings as a step of its own: ``call(step)`` reports its fraction done
    through ``step`` (the probe's folds, the k-NN overlap's blocks: minutes at 100,000 tiles), shown as
    ``<stage>: n/100``. It runs in a ``progress.cancel_scope`` of ``cancel`` (and of the caller's scope), so a
    Cancel stops it at its next checkpoint: within a probe fold's fit, between the k-NN overlap's products."""

    def work(report: Callable[[float], None]) -> T:
        def step(fraction: float) -> None:
            _check(cancel, what)
            report(fraction)

        with cancel_scope(cancel, f"{what} cancelled; no report was written.", inherit=True):
            return call(step)

    return (yield from reported(work, stage))


def iter_linear_probe(
    model: EmbeddingModel,
    source: str | Path,
    *,
    n_splits: int = 5,
    seed: int = 0,
    cancel: threading.Event | None = None,
) -> Iterator[Progress | Report]:
    """Balanced accuracy of a logistic-regression probe (stratified k-fold) on labelled tiles; the folds and seed
    of ``pathdistill eval probe`` (5, 0: the same numbers on the same tiles), fewer folds when the smallest
    class has fewer tiles (at least 2), recorded in the report. A CSV's ``patient``/``slide``/``group`` column
    (``labelled_tiles.tile_groups``) makes the folds patient-level, as the CLI's.

    Args:
        model: the embedding model.
        source: class sub-folders, a ``path,label`` CSV or a histolab-named flat folder
            (see ``evaluation.labelled_tiles``).
        n_splits: cross-validation folds.
        seed: seed of the folds and the probe.
        cancel: optional event that stops the run (raises ``Cancelled``).
    """
    paths, labels = list_labelled_tiles(source)
    groups, col = tile_groups(source)  # a patient column of the CSV: patient-level folds
    check_probe_labels(source, labels, groups)  # before any tile is embedded
    folds = max(2, min(n_splits, int(np.unique(labels, return_counts=True)[1].min())))
    if groups is not None:
        folds = max(2, min(folds, len(np.unique(groups))))
    # a training fold without a class is refused here, before any tile is embedded (as the CLI's)
    check_folds(labels, n_splits=folds, seed=seed, groups=groups)
    feats = yield from _embed(model, paths, "embedding tiles", cancel)
    res = yield from _step(
        lambda step: linear_probe(feats, labels, n_splits=folds, seed=seed, groups=groups, progress=step),
        "linear probe",
        "linear probe",
        cancel,
    )
    rows: list[dict[str, Cell]] = [
        {"fold": i + 1, "balanced_accuracy": float(v)} for i, v in enumerate(res.fold_scores)
    ]
    classes, counts = np.unique(labels, return_counts=True)
    summary = {"balanced_accuracy": res.mean, "std": res.std, "tiles": float(len(labels))}
    params: dict[str, object] = {
        "source": str(source),
        "model": model.spec.name,
        "classes": dict(zip(classes.tolist(), counts.tolist(), strict=True)),
        "folds": folds,
        "seed": seed,
        "splits": f"{col} (StratifiedGroupKFold)" if groups is not None else "tile",
    }
    yield Report("linear_probe", rows, summary, params)


def knn_overlap_note(n_tiles: int, k: int, max_chance: float = MAX_TOPK_CHANCE) -> str | None:
    """What to read a k-NN overlap over ``n_tiles`` tiles against, or None when chance is low enough.

    Unrelated models already share ``k / (n - 1)`` of their ``k`` neighbours. Above ``max_chance`` (the
    robustness run's top-k rule, ``metrics.pairs.topk_pool_note``) the note gives that chance level; at 1 (k >=
    n - 1: 6 tiles, k = 5) every other tile is a neighbour and the overlap is 1 by construction.
    """
    chance = knn_overlap_chance(n_tiles, k)
    if chance <= max_chance:
        return None
    need = int(np.ceil(k / max_chance)) + 1
    if chance >= 1.0:
        return (
            f"mean_knn{k}_overlap not meaningful: with {n_tiles} tiles every other tile is one of the {k} "
            f"nearest, so the overlap is 1 by construction; it needs >= {need} tiles"
        )
    return (
        f"mean_knn{k}_overlap: unrelated models already share {chance:.2f} of their {k} nearest among "
        f"{n_tiles - 1} other tiles; read it against that (chance <= {max_chance:g} from {need} tiles)"
    )


def iter_teacher_student(
    teacher: EmbeddingModel,
    student: EmbeddingModel,
    source: str | Path,
    *,
    k: int = 5,
    cancel: threading.Event | None = None,
) -> Iterator[Progress | Report]:
    """Linear CKA and per-tile k-NN overlap between teacher and student embeddings of the same tiles.

    The summary's ``knn<k>_chance`` is the overlap of unrelated models (``k / (N - 1)``); when it is above
    ``metrics.pairs.MAX_TOPK_CHANCE`` (as the robustness run's top-k accuracy, fewer than ``10 k + 1`` tiles)
    ``params["notes"]`` says to read the mean against it, and at 1 (``k >= N - 1``) the mean is NaN (1 by
    construction); the per-tile overlaps stay in the rows.

    Args:
        teacher, student: the two embedding models.
        source: tiles as for :func:`iter_linear_probe` (labels are only copied into the table).
        k: neighbours of the overlap (capped at N - 1).
        cancel: optional event that stops the run (raises ``Cancelled``).
    """
    paths, labels = list_labelled_tiles(source)
    if len(paths) < 2:  # as `eval compare`; the k-NN check spoke of "1 <= k < N" after both models had run
        raise EvaluationError(
            f"{Path(source).name}: the teacher-vs-student report needs at least 2 tiles; it has {len(paths)}."
        )
    ft = yield from _embed(teacher, paths, "teacher", cancel)
    fs = yield from _embed(student, paths, "student", cancel)
    k = max(1, min(k, len(paths) - 1))
    overlap = yield from _step(  # quadratic in the tiles: ~30 min for 100,000 on a CPU
        lambda step: knn_overlap(ft, fs, k, progress=step), "k-NN overlap", "teacher vs student", cancel
    )
    cka = yield from _step(  # three D x D products over the tiles: seconds at 100,000 x 1,536
        lambda step: linear_cka(ft, fs), "linear CKA", "teacher vs student", cancel
    )
    rows: list[dict[str, Cell]] = [{"tile": p.name, "label": str(lb), f"knn{k}_overlap": float(o)}
                                   for p, lb, o in zip(paths, labels, overlap, strict=True)]  # fmt: skip
    note, chance = knn_overlap_note(len(paths), k), knn_overlap_chance(len(paths), k)
    summary = {
        "linear_cka": cka,
        f"mean_knn{k}_overlap": float("nan") if chance >= 1.0 else float(overlap.mean()),
        f"knn{k}_chance": chance,
        "tiles": float(len(paths)),
    }
    params: dict[str, object] = {
        "source": str(source),
        "teacher": teacher.spec.name,
        "student": student.spec.name,
        "k": k,
        "notes": [note] if note else [],
    }
    yield Report("teacher_student", rows, summary, params)
