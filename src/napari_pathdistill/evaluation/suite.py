"""Evaluation runs launched from the Evaluate widget (pure core, no Qt): each yields Progress then a Report.

* :func:`iter_pair_robustness` - PLISM-style pair metrics (mean cosine, top-k accuracy) over a CSV of slide pairs;
* :func:`iter_linear_probe` - ``probes.linear_probe`` (balanced accuracy, stratified CV) on labelled tiles;
* :func:`iter_teacher_student` - linear CKA and retrieval overlap of teacher and student on the same tiles.

:func:`write_report` saves ``<name>.csv`` and ``<name>.json`` atomically (temporary file + ``os.replace``).
"""

from __future__ import annotations

import csv
import io
import json
import threading
from collections.abc import Generator, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from napari_pathdistill.atomic import atomic_write_text
from napari_pathdistill.errors import Cancelled, EvaluationError
from napari_pathdistill.evaluation.labelled_tiles import iter_embed_tiles, list_labelled_tiles
from napari_pathdistill.evaluation.probes import linear_probe
from napari_pathdistill.inference.pair_similarity import iter_pair_similarity
from napari_pathdistill.metrics.agreement import knn_overlap, linear_cka
from napari_pathdistill.models.embedding_model import EmbeddingModel
from napari_pathdistill.progress import Progress, drain, relabel

Cell = str | int | float  # one value of a report row


@dataclass
class Report:
    """Result of one evaluation: a table (list of rows), scalar summary and the inputs that produced it."""

    name: str
    rows: list[dict[str, Cell]]
    summary: dict[str, float]
    params: dict[str, object] = field(default_factory=dict)


def _check(cancel: threading.Event | None, what: str) -> None:
    if cancel is not None and cancel.is_set():
        raise Cancelled(f"{what} cancelled; no report was written.")


def read_pairs(csv_path: str | Path) -> list[tuple[Path, Path]]:
    """Slide pairs from a CSV with columns ``slide_a,slide_b`` (or BIRL's ``Target image,Source image``).

    Relative paths are resolved against the CSV's folder.
    """
    path = Path(csv_path)
    if not path.is_file():
        raise EvaluationError(f"Pair list '{path}' not found: give a CSV with columns slide_a,slide_b.")
    with path.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    for ka, kb in (("slide_a", "slide_b"), ("Target image", "Source image")):
        if rows and ka in rows[0] and kb in rows[0]:
            return [(path.parent / r[ka], path.parent / r[kb]) for r in rows]
    raise EvaluationError(f"{path.name} has no slide_a,slide_b columns (nor Target image,Source image).")


def iter_pair_robustness(
    model: EmbeddingModel,
    pairs_csv: str | Path,
    *,
    top_k: int = 10,
    cancel: threading.Event | None = None,
    **kw,
) -> Iterator[Progress | Report]:
    """Mean cosine and top-k accuracy of matched tiles for every slide pair; the summary holds their medians."""
    pairs = read_pairs(pairs_csv)
    rows: list[dict[str, Cell]] = []
    kw.setdefault("tile_px", model.spec.tile_px)  # tiles as the model was trained: px and um/px
    kw.setdefault("mpp", model.spec.mpp)
    # PLISM-style pairs are registered tissue regions; the tissue mask can miss pale IHC (OS-2 Ki67: 2/289 kept)
    kw.setdefault("min_tissue", 0.0)
    for i, (a, b) in enumerate(pairs):
        _check(cancel, "Robustness")
        yield Progress(i, len(pairs), f"pair {i + 1}/{len(pairs)}")
        res = drain(iter_pair_similarity(model, a, b, top_k=top_k, cancel=cancel, **kw))
        _check(cancel, "Robustness")
        assert res is not None
        rows.append({"slide_a": a.name, "slide_b": b.name, "tiles": len(res.cosine),
                     "mean_cosine": res.mean_cosine, f"top{res.k}_accuracy": res.topk_accuracy})  # fmt: skip
    summary = {
        "median_mean_cosine": float(np.median([r["mean_cosine"] for r in rows])),
        "median_topk_accuracy": float(np.median([list(r.values())[-1] for r in rows])),
    }
    yield Report(
        "robustness", rows, summary, {"pairs": str(pairs_csv), "top_k": top_k, "model": model.spec.name}
    )


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


def iter_linear_probe(
    model: EmbeddingModel,
    source: str | Path,
    *,
    n_splits: int = 3,
    seed: int = 0,
    cancel: threading.Event | None = None,
) -> Iterator[Progress | Report]:
    """Balanced accuracy of a logistic-regression probe (stratified k-fold) on labelled tiles.

    Args:
        source: class sub-folders, a ``path,label`` CSV or a histolab-named flat folder
            (see ``evaluation.labelled_tiles``).
    """
    paths, labels = list_labelled_tiles(source)
    feats = yield from _embed(model, paths, "embedding tiles", cancel)
    res = linear_probe(feats, labels, n_splits=n_splits, seed=seed)
    rows: list[dict[str, Cell]] = [
        {"fold": i + 1, "balanced_accuracy": float(v)} for i, v in enumerate(res.fold_scores)
    ]
    classes, counts = np.unique(labels, return_counts=True)
    summary = {"balanced_accuracy": res.mean, "std": res.std, "tiles": float(len(labels))}
    params: dict[str, object] = {
        "source": str(source),
        "model": model.spec.name,
        "classes": dict(zip(classes.tolist(), counts.tolist())),
    }
    yield Report("linear_probe", rows, summary, params)


def iter_teacher_student(
    teacher: EmbeddingModel,
    student: EmbeddingModel,
    source: str | Path,
    *,
    k: int = 5,
    cancel: threading.Event | None = None,
) -> Iterator[Progress | Report]:
    """Linear CKA and per-tile k-NN overlap between teacher and student embeddings of the same tiles."""
    paths, labels = list_labelled_tiles(source)
    ft = yield from _embed(teacher, paths, "teacher", cancel)
    fs = yield from _embed(student, paths, "student", cancel)
    k = max(1, min(k, len(paths) - 1))
    overlap = knn_overlap(ft, fs, k)
    rows: list[dict[str, Cell]] = [{"tile": p.name, "label": str(lb), f"knn{k}_overlap": float(o)}
                                   for p, lb, o in zip(paths, labels, overlap, strict=True)]  # fmt: skip
    summary = {
        "linear_cka": linear_cka(ft, fs),
        f"mean_knn{k}_overlap": float(overlap.mean()),
        "tiles": float(len(paths)),
    }
    yield Report("teacher_student", rows, summary,
                 {"source": str(source), "teacher": teacher.spec.name, "student": student.spec.name})  # fmt: skip


def write_report(report: Report, out_dir: str | Path) -> tuple[Path, Path]:
    """Write ``<name>.csv`` (the rows) and ``<name>.json`` (everything) into ``out_dir``, atomically."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    keys = list(dict.fromkeys(k for r in report.rows for k in r))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=keys, lineterminator="\n")
    writer.writeheader()
    writer.writerows(report.rows)
    csv_path, json_path = out / f"{report.name}.csv", out / f"{report.name}.json"
    atomic_write_text(csv_path, buf.getvalue())
    atomic_write_text(json_path, json.dumps(asdict(report), indent=2, default=str))
    return csv_path, json_path
