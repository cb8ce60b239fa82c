"""Teacher vs student on the same tiles in one run (``pathdistill eval compare``): a ``compare`` Report.

Measured: linear CKA of the embeddings, per-tile agreement of attention maps, throughput of both models
(after one warm-up batch) and their ratio; robustness medians of earlier ``eval robustness`` runs are added
to the table when given.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, Protocol

import numpy as np

from napari_pathdistill.errors import Cancelled, EvaluationError
from napari_pathdistill.evaluation.report import Cell, Report
from napari_pathdistill.metrics.agreement import attention_agreement, linear_cka
from napari_pathdistill.progress import Progress

AttentionFn = Callable[[Any, np.ndarray], np.ndarray]


class Embedder(Protocol):
    """Anything with ``embed`` of (B, H, W, 3) uint8 tiles -> (B, D) features (e.g. ``EmbeddingModel``)."""

    def embed(self, tiles: np.ndarray) -> np.ndarray: ...


def _timed_embed(model: Embedder, tiles: np.ndarray, batch: int) -> tuple[np.ndarray, float]:
    """(N, D) features of ``tiles`` and the tiles per second of the timed pass (after one warm-up batch)."""
    model.embed(tiles[:batch])  # warm-up (lazy init, cudnn autotune)
    t0 = time.perf_counter()
    feats = np.concatenate(
        [np.asarray(model.embed(tiles[i : i + batch])) for i in range(0, len(tiles), batch)]
    )
    return feats, len(tiles) / (time.perf_counter() - t0)


def _summary(
    cka: float, att: np.ndarray, speed: tuple[float, float], robustness: dict[str, dict[str, float]]
) -> dict[str, float]:
    """One value per metric; robustness medians as ``robustness/<model>/<metric>``."""
    r = att[np.isfinite(att)]
    out = {
        "linear_cka": cka,
        "attention_pearson_mean": float(r.mean()) if r.size else float("nan"),
        "attention_pearson_median": float(np.median(r)) if r.size else float("nan"),
        "teacher_tiles_per_s": speed[0],
        "student_tiles_per_s": speed[1],
        "speed_ratio_student_over_teacher": speed[1] / speed[0],
    }
    for model, vals in robustness.items():
        out |= {f"robustness/{model}/{k}": v for k, v in vals.items()}
    return out


def iter_compare(
    teacher: Embedder,
    student: Embedder,
    tiles: np.ndarray,
    *,
    attention: AttentionFn | None = None,
    robustness: dict[str, dict[str, float]] | None = None,
    batch_size: int = 16,
    names: tuple[str, str] = ("teacher", "student"),
    cancel: threading.Event | None = None,
    student_tiles: np.ndarray | None = None,
) -> Iterator[Progress | Report]:
    """Compare two embedding models on the same (N, H, W, 3) uint8 tiles.

    Args:
        teacher, student: objects with ``embed(tiles) -> (B, D)`` (e.g. ``EmbeddingModel``).
        tiles: (N, H, W, 3) uint8 tiles, N >= 2 (the teacher's; the student's too unless ``student_tiles``).
        attention: ``attention(model, tiles) -> (B, h, w)`` maps (e.g. ``inference.attention_maps``); None skips.
        robustness: optional ``{model_name: {metric__group: median}}`` to include in the table.
        batch_size: tiles per forward pass.
        names: display names of the two models.
        cancel: optional event that stops the run between stages.
        student_tiles: the same N tiles at the student's tile size (N, h, w, 3), when it differs from the
            teacher's: each model is fed tiles as it was trained (as the Evaluate widget's teacher-vs-student run).

    Yields:
        ``Progress`` per stage, then a ``compare`` :class:`Report`: one ``metric,value`` row per summary entry,
        ``arrays["attention_r"]`` the (N,) per-tile Pearson r (empty without ``attention``).
    """
    if len(tiles) < 2:
        raise EvaluationError("the teacher-vs-student report needs at least 2 tiles")
    per_model = (tiles, tiles if student_tiles is None else student_tiles)
    if len(per_model[1]) != len(tiles):
        raise EvaluationError(f"student_tiles holds {len(per_model[1])} tiles, tiles {len(tiles)}")
    stages = 3 if attention else 2
    feats, speed = [], []
    for i, model in enumerate((teacher, student)):
        if cancel is not None and cancel.is_set():
            raise Cancelled("teacher-vs-student comparison cancelled")
        yield Progress(i, stages, f"embedding with {names[i]}")
        f, tps = _timed_embed(model, per_model[i], batch_size)
        feats.append(f)
        speed.append(tps)
    att = np.empty(0)
    if attention is not None:
        yield Progress(2, stages, "attention maps")
        maps = [  # maps of two grids are resized to one by attention_agreement
            np.concatenate([attention(m, t[i : i + batch_size]) for i in range(0, len(t), batch_size)])
            for m, t in zip((teacher, student), per_model, strict=True)
        ]
        att = attention_agreement(maps[0], maps[1])
    yield Progress(stages, stages, "done")
    summary = _summary(linear_cka(feats[0], feats[1]), att, (speed[0], speed[1]), robustness or {})
    rows: list[dict[str, Cell]] = [{"metric": k, "value": v} for k, v in summary.items()]
    params: dict[str, object] = {
        "teacher": names[0],
        "student": names[1],
        "n_tiles": len(tiles),
        "batch_size": batch_size,
    }
    yield Report("compare", rows, summary, params, {"attention_r": att})


def robustness_medians(summary: dict) -> dict[str, float]:
    """Flatten a robustness ``summary`` to ``{"<metric>__<group>": median}``."""
    return {f"{m}__{g}": v["median"] for g, ms in summary.items() for m, v in ms.items()}
