"""The Evaluate widget's robustness run over a CSV of slide pairs (pure core, no Qt).

Each pair is registered, tiled and embedded by ``inference.pair_similarity`` and scored with PLISM's metrics
(mean cosine of matched tiles, top-k accuracy). Finished pairs are not lost: with a
``plismbench_files.PairStore`` each one is saved as it ends (``<folder>/pairs/<a>---<b>.<key>.json``, the key
a hash of both paths and the request: :func:`pair_key`), so a rerun of the same request resumes (also after
another model's run into the same folder); a cancelled run yields a report of the pairs it finished before raising
``Cancelled``.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import threading
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from napari_pathdistill.errors import Cancelled, EvaluationError, PathDistillError
from napari_pathdistill.evaluation.manifest import read_pairs
from napari_pathdistill.evaluation.plismbench_files import PairStore
from napari_pathdistill.evaluation.report import Cell, Report
from napari_pathdistill.inference.feature_cache import slide_fingerprint
from napari_pathdistill.inference.pair_similarity import iter_pair_similarity
from napari_pathdistill.models.embedding_model import EmbeddingModel
from napari_pathdistill.progress import Progress, raise_if_cancelled

#: the columns of a pair's row (a resumed row is read back with these)
ROW_KEYS = ("slide_a", "slide_b", "tiles", "mean_cosine", "k", "topk_accuracy", "topk_chance", "registration",
            "ncc", "note", "error")  # fmt: skip
#: ``iter_pair_similarity`` arguments that change a pair's numbers (with their defaults there)
_GEOMETRY = ("tile_px", "mpp", "min_tissue", "fallback_mpp", "max_overhang")


def _slide_stamp(path: Path) -> str:
    """``size:mtime_ns`` of a slide (a folder, e.g. DICOM: its files' total and newest), "" when missing: a slide
    rewritten since has its pairs recomputed (the CLI's per-pair stamp of a features file)."""
    try:
        _, size, mtime = slide_fingerprint(path).rsplit("|", 2)
    except OSError:
        return ""
    return f"{size}:{mtime}"


def request_stamp(model: EmbeddingModel, top_k: int, kw: dict[str, Any]) -> dict[str, object]:
    """What a saved pair must share with this run to be resumed, less the slides: the CLI's ``precision`` and
    ``subset`` (float32 metrics, every matched tile), the model (name, weights hash and the autocast dtype of its
    embeddings: bfloat16 on CUDA, float32 on the CPU), top-k and the tiling."""
    defaults = inspect.signature(iter_pair_similarity).parameters
    geometry = {name: kw.get(name, defaults[name].default) for name in _GEOMETRY}
    return {"precision": "float32", "subset": "all", "model": model.spec.name, "weights": model.weights_id,
            "embedding_dtype": model.amp_name, "top_k": top_k, **geometry}  # fmt: skip


def _pair_stamp(a: Path, b: Path, request: dict[str, object]) -> dict[str, object]:
    return {
        **request,
        "paths": [str(a.resolve()), str(b.resolve())],
        "files": [_slide_stamp(a), _slide_stamp(b)],
    }


def pair_key(a: Path, b: Path, request: dict[str, object] | None = None) -> str:
    """12 hex digits of both slides' full paths and the ``request`` (:func:`request_stamp`): the store's file of
    a pair, beside the slides' names. Pairs of same-named slides in other folders (two cohorts' ``slide_01.svs``)
    and the same pair compared by two models (or tilings) saving to one folder keep files of their own.
    Without ``request``: the key of the previous version (paths only), looked up too."""
    text = f"{a.resolve()}\n{b.resolve()}"
    if request is not None:
        text += "\n" + json.dumps(request, sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:12]


def _saved_row(
    store: PairStore | None, a: Path, b: Path, request: dict[str, object], stamp: dict[str, object]
) -> dict[str, Cell] | None:
    """The pair's row saved by an earlier run of the same request, or None (absent, other stamp, unreadable).
    Files of earlier versions (keyed by the paths alone) are read when their stamp matches; those written before
    the stamp held ``embedding_dtype`` never do (their dtype is unknown: computed again)."""
    if store is None:
        return None
    for key in (pair_key(a, b, request), pair_key(a, b)):
        saved = store.get(a.name, b.name, key)
        if (
            saved is not None
            and all(saved.get(k) == v for k, v in stamp.items())
            and set(ROW_KEYS) <= saved.keys()
        ):
            return {k: saved[k] for k in ROW_KEYS}
    return None


def _pair_row(model: EmbeddingModel, a: Path, b: Path, top_k: int, cancel: threading.Event | None,
              kw: dict[str, Any], stage: str, pair: tuple[int, int]) -> Generator[Progress, None, dict[str, Cell]]:  # fmt: skip
    """One pair's report row: tiles, mean cosine, top-k accuracy (k: the k used) and its chance level (or a
    note), and the registration behind them (a doubtful one fails the pair: ``strict_registration``).
    The pair's own progress is re-yielded as ``<stage>: embedding A`` (tiles), or over pairs when it has no count."""
    res = None
    for item in iter_pair_similarity(model, a, b, top_k=top_k, cancel=cancel, strict_registration=True, **kw):
        if not isinstance(item, Progress):
            res = item
        elif item.total:
            yield Progress(item.done, item.total, f"{stage}: {item.stage}")
        else:
            yield Progress(*pair, f"{stage}: {item.stage}")
    assert res is not None
    reg = res.transform.registration
    return {"slide_a": a.name, "slide_b": b.name, "tiles": len(res.cosine), "mean_cosine": res.mean_cosine,
            "k": res.k, "topk_accuracy": res.topk_accuracy, "topk_chance": res.topk_chance,
            "registration": reg.method, "ncc": reg.ncc, "note": res.topk_note or "", "error": ""}  # fmt: skip


def _failed_row(a: Path, b: Path, top_k: int, exc: Exception) -> dict[str, Cell]:
    nan = float("nan")
    return {"slide_a": a.name, "slide_b": b.name, "tiles": 0, "mean_cosine": nan, "k": top_k,
            "topk_accuracy": nan, "topk_chance": nan, "registration": "", "ncc": nan, "note": "",
            "error": str(exc)}  # fmt: skip


def _report(rows: list[dict[str, Cell]], params: dict[str, object]) -> Report:
    """The run's report: medians over the compared pairs (NaN when none), counts of compared and failed pairs."""
    good = [r for r in rows if r.get("tiles", 0)]
    meaningful = [float(r["topk_accuracy"]) for r in good if not r["note"]]
    cosines = [float(r["mean_cosine"]) for r in good]
    summary = {
        "median_mean_cosine": float(np.median(cosines)) if cosines else float("nan"),
        "median_topk_accuracy": float(np.median(meaningful)) if meaningful else float("nan"),
        "pairs": float(len(good)),
        "failed_pairs": float(len(rows) - len(good)),
    }
    return Report("robustness", rows, summary, params)


def iter_pair_robustness(
    model: EmbeddingModel,
    pairs_csv: str | Path,
    *,
    top_k: int = 10,
    store: PairStore | None = None,
    cancel: threading.Event | None = None,
    **kw: Any,
) -> Iterator[Progress | Report]:
    """Mean cosine and top-k accuracy of matched tiles for every slide pair; the summary holds their medians.

    A pair that cannot be compared (unreadable slide, no um/px, failed registration, too few tiles) fails alone:
    its row names the error and the others go on; the run fails only when no pair succeeds. A top-k accuracy
    over a candidate pool too small to mean anything is kept out of the median (NaN when no pair has a
    meaningful one) and its row's ``note`` says why.

    Args:
        model: the embedding model; tiles are cut at its ``tile_px`` and ``mpp`` unless ``kw`` says otherwise.
        pairs_csv: CSV of slide pairs (see ``manifest.read_pairs``).
        top_k: k of the top-k retrieval accuracy.
        store: optional per-pair results (``<folder>/pairs/``): each compared pair is saved as it ends, and a
            pair saved by a run of the same request (:func:`request_stamp`, both slides' paths, sizes and
            mtimes) is read back instead of computed (``params["resumed"]`` counts them). Failed pairs are not
            saved: a rerun tries them again.
        cancel: optional event that stops the run: a report of the pairs finished so far
            (``params["cancelled"]``: ``(finished, total)``) is yielded, then ``Cancelled`` is raised.
        **kw: passed to ``inference.pair_similarity.iter_pair_similarity`` (e.g. ``fallback_mpp``, the level-0
            um/px of plain JPEG/PNG slides).
    """
    pairs = read_pairs(pairs_csv)
    kw.setdefault("tile_px", model.spec.tile_px)  # tiles as the model was trained: px and um/px
    kw.setdefault("mpp", model.spec.mpp)
    request = request_stamp(model, top_k, kw)
    params: dict[str, object] = {"pairs": str(pairs_csv), "top_k": top_k, "model": model.spec.name,
                                 "embedding_dtype": request["embedding_dtype"],
                                 **{k: v for k, v in request.items() if k in _GEOMETRY}}  # fmt: skip
    rows: list[dict[str, Cell]] = []
    n, resumed = len(pairs), 0
    try:
        for i, (a, b) in enumerate(pairs):
            raise_if_cancelled(cancel, "Robustness cancelled")
            stage = f"pair {i + 1}/{n}"
            yield Progress(i, n, stage)
            stamp = _pair_stamp(a, b, request)
            row = _saved_row(store, a, b, request, stamp)
            if row is not None:
                resumed += 1
                rows.append(row)
                continue
            try:
                row = yield from _pair_row(model, a, b, top_k, cancel, kw, stage, (i, n))
            except Cancelled:
                raise
            except PathDistillError as exc:
                rows.append(_failed_row(a, b, top_k, exc))
                continue
            rows.append(row)
            if store is not None:
                store.put(a.name, b.name, {**row, **stamp}, pair_key(a, b, request))
            raise_if_cancelled(cancel, "Robustness cancelled")
    except Cancelled as exc:
        if rows:  # the finished pairs, for the caller to show (they are in ``store`` too)
            yield _report(rows, {**params, "resumed": resumed, "cancelled": (len(rows), n)})
        raise Cancelled(
            f"Robustness cancelled after {len(rows)} of {n} pairs; no report was written."
        ) from exc
    if not any(r.get("tiles", 0) for r in rows):
        raise EvaluationError("No slide pair could be compared: " + "; ".join(
            f"{r['slide_a']} vs {r['slide_b']}: {r['error']}" for r in rows))  # fmt: skip
    yield _report(rows, {**params, "resumed": resumed})
