"""Teacher-vs-student report: embedding agreement (linear CKA), attention agreement, speed, robustness.

Everything is measured in one run on the same tiles; the table is written as CSV + JSON and a matplotlib
figure (Agg backend: no display needed).
"""

from __future__ import annotations

import csv
import io
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from napari_pathdistill.atomic import atomic_path, atomic_write_text
from napari_pathdistill.errors import Cancelled, EvaluationError
from napari_pathdistill.metrics.agreement import attention_agreement, linear_cka
from napari_pathdistill.progress import Progress

AttentionFn = Callable[[Any, np.ndarray], np.ndarray]


@dataclass
class CompareReport:
    """Result of :func:`iter_compare`.

    Attributes:
        teacher, student: model names.
        n_tiles: tiles used.
        cka: linear CKA of the (N, D_t) and (N, D_s) embeddings.
        attention_r: (N,) per-tile Pearson r of attention maps (empty when no attention function).
        tiles_per_s: ``{"teacher": ..., "student": ...}`` measured in this run (after one warm-up batch).
        robustness: ``{model: {metric__group: median}}`` when robustness results were given.
    """

    teacher: str
    student: str
    n_tiles: int
    cka: float
    attention_r: np.ndarray
    tiles_per_s: dict[str, float]
    robustness: dict[str, dict[str, float]] = field(default_factory=dict)

    @property
    def speed_ratio(self) -> float:
        """Student throughput / teacher throughput."""
        return self.tiles_per_s["student"] / self.tiles_per_s["teacher"]

    def table(self) -> list[dict[str, object]]:
        """One row per metric: ``metric, value`` (robustness rows as ``robustness/<model>/<metric>``)."""
        r = self.attention_r[np.isfinite(self.attention_r)]
        rows: list[dict[str, object]] = [
            {"metric": "linear_cka", "value": self.cka},
            {"metric": "attention_pearson_mean", "value": float(r.mean()) if r.size else float("nan")},
            {"metric": "attention_pearson_median", "value": float(np.median(r)) if r.size else float("nan")},
            {"metric": "teacher_tiles_per_s", "value": self.tiles_per_s["teacher"]},
            {"metric": "student_tiles_per_s", "value": self.tiles_per_s["student"]},
            {"metric": "speed_ratio_student_over_teacher", "value": self.speed_ratio},
        ]
        for model, vals in self.robustness.items():
            rows += [{"metric": f"robustness/{model}/{k}", "value": v} for k, v in vals.items()]
        return rows

    def save(self, out_dir: str | Path) -> dict[str, Path]:
        """Write ``compare.csv``, ``compare.json`` and ``compare.png``; returns their paths."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        paths = {"csv": out / "compare.csv", "json": out / "compare.json", "png": out / "compare.png"}
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=["metric", "value"], lineterminator="\r\n")
        w.writeheader()
        w.writerows(self.table())
        atomic_write_text(paths["csv"], buf.getvalue())
        payload = asdict(self) | {"attention_r": self.attention_r.tolist(), "speed_ratio": self.speed_ratio}
        atomic_write_text(paths["json"], json.dumps(payload, indent=2))
        with atomic_path(paths["png"]) as tmp:
            plot_report(self, tmp)
        return paths


def plot_report(rep: CompareReport, path: Path) -> Path:
    """Three panels: throughput, attention-r histogram, robustness medians per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    axes[0].bar(
        ["teacher", "student"], [rep.tiles_per_s["teacher"], rep.tiles_per_s["student"]], color=["C0", "C1"]
    )
    axes[0].set(title=f"throughput (x{rep.speed_ratio:.1f}); CKA={rep.cka:.2f}", ylabel="tiles / s")
    r = rep.attention_r[np.isfinite(rep.attention_r)]
    axes[1].hist(r, bins=20, range=(-1, 1), color="C2")
    axes[1].set(title="attention agreement", xlabel="Pearson r per tile", ylabel="tiles")
    keys = sorted({k for v in rep.robustness.values() for k in v})
    for i, (model, vals) in enumerate(rep.robustness.items()):
        x = np.arange(len(keys)) + 0.4 * i
        axes[2].bar(x, [vals.get(k, np.nan) for k in keys], width=0.4, label=model)
    axes[2].set_xticks(np.arange(len(keys)) + 0.2, keys, rotation=45, ha="right", fontsize=7)
    axes[2].set(title="robustness (medians)", ylim=(0, 1))
    if rep.robustness:
        axes[2].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _timed_embed(embed: Callable[[np.ndarray], np.ndarray], tiles: np.ndarray, batch: int):
    embed(tiles[:batch])  # warm-up (lazy init, cudnn autotune)
    t0 = time.perf_counter()
    feats = np.concatenate([np.asarray(embed(tiles[i : i + batch])) for i in range(0, len(tiles), batch)])
    return feats, len(tiles) / (time.perf_counter() - t0)


def iter_compare(
    teacher,
    student,
    tiles: np.ndarray,
    *,
    attention: AttentionFn | None = None,
    robustness: dict[str, dict[str, float]] | None = None,
    batch_size: int = 16,
    names: tuple[str, str] = ("teacher", "student"),
    cancel: threading.Event | None = None,
) -> Iterator[Progress | CompareReport]:
    """Compare two embedding models on the same (N, H, W, 3) uint8 tiles.

    Args:
        teacher, student: objects with ``embed(tiles) -> (B, D)`` (e.g. ``EmbeddingModel``).
        tiles: (N, H, W, 3) uint8 tiles, N >= 2.
        attention: ``attention(model, tiles) -> (B, h, w)`` maps (e.g. ``inference.attention_maps``); None skips.
        robustness: optional ``{model_name: {metric__group: median}}`` to include in the table.
        batch_size: tiles per forward pass.
        names: display names of the two models.
        cancel: optional event that stops the run between stages.

    Yields:
        ``Progress`` per stage, then the :class:`CompareReport`.
    """
    if len(tiles) < 2:
        raise EvaluationError("the teacher-vs-student report needs at least 2 tiles")
    stages = 3 if attention else 2
    out = {}
    for i, (key, model) in enumerate((("teacher", teacher), ("student", student))):
        if cancel is not None and cancel.is_set():
            raise Cancelled("teacher-vs-student comparison cancelled")
        yield Progress(i, stages, f"embedding with {names[i]}")
        out[key] = _timed_embed(model.embed, tiles, batch_size)
    att = np.empty(0)
    if attention is not None:
        yield Progress(2, stages, "attention maps")
        maps = [
            np.concatenate(
                [attention(m, tiles[i : i + batch_size]) for i in range(0, len(tiles), batch_size)]
            )
            for m in (teacher, student)
        ]
        att = attention_agreement(maps[0], maps[1])
    yield Progress(stages, stages, "done")
    yield CompareReport(
        names[0],
        names[1],
        len(tiles),
        linear_cka(out["teacher"][0], out["student"][0]),
        att,
        {"teacher": out["teacher"][1], "student": out["student"][1]},
        robustness or {},
    )


def robustness_medians(summary: dict) -> dict[str, float]:
    """Flatten a robustness ``summary`` to ``{"<metric>__<group>": median}``."""
    return {f"{m}__{g}": v["median"] for g, ms in summary.items() for m, v in ms.items()}
