"""The one evaluation report type: a table, a scalar summary, its inputs and arrays; saved as CSV + JSON + PNG.

Every evaluation run that ends in a report (the Evaluate widget's runs in ``evaluation.runs`` and
``pathdistill eval compare`` from ``evaluation.compare``) yields a :class:`Report`. ``Report.save`` writes
``<name>.csv`` (the rows), ``<name>.json`` (everything) and ``<name>.png`` (``Report.plot``), each atomically.
The plot draws on a plain matplotlib ``Figure`` (no pyplot, no backend switch), so the widget draws the same
figure on its Qt canvas.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from napari_pathdistill.atomic import atomic_path, atomic_write_text

if TYPE_CHECKING:  # matplotlib is imported when a report is drawn, not with the module
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

Cell = str | int | float  # one value of a report row


@dataclass
class Report:
    """Result of one evaluation.

    Attributes:
        name: kind of evaluation and stem of the saved files: ``robustness``, ``linear_probe``,
            ``teacher_student`` or ``compare``.
        rows: the table, one dict per row (``<name>.csv``).
        summary: scalar results, e.g. ``{"linear_cka": 0.9}``.
        params: the inputs that produced it (sources, model names, options).
        arrays: per-item vectors that are no table, e.g. ``compare``'s (N,) ``attention_r``.
    """

    name: str
    rows: list[dict[str, Cell]]
    summary: dict[str, float]
    params: dict[str, object] = field(default_factory=dict)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)

    def plot(self, fig: Figure) -> None:
        """Draw the report's figure on ``fig`` (a ``compare`` report: three panels; others: one axis)."""
        PLOTS.get(self.name, _plot_rows)(self, fig)

    def save(self, out_dir: str | Path) -> dict[str, Path]:
        """Write ``<name>.csv``, ``<name>.json`` and ``<name>.png`` into ``out_dir`` atomically.

        Returns:
            ``{"csv": path, "json": path, "png": path}``.
        """
        from matplotlib.figure import Figure

        out = Path(out_dir)
        paths = {ext: out / f"{self.name}.{ext}" for ext in ("csv", "json", "png")}
        atomic_write_text(paths["csv"], rows_csv(self.rows))
        atomic_write_text(paths["json"], json.dumps(asdict(self), indent=2, default=_jsonable))
        fig = Figure(figsize=(13, 3.8) if self.name == "compare" else (5, 3.5), layout="tight")
        self.plot(fig)
        with atomic_path(paths["png"]) as tmp:
            fig.savefig(tmp, dpi=110)
        return paths


def rows_csv(rows: list[dict]) -> str:
    """CSV text of ``rows``: a header of every key in first-seen order, then one line per row."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(dict.fromkeys(k for r in rows for k in r)))
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def _jsonable(value: object) -> object:
    """JSON stand-in for numpy values (arrays as lists, scalars as numbers) and anything else (``str``)."""
    if isinstance(value, np.ndarray | np.generic):
        return value.tolist()
    return str(value)


def title(report: Report) -> str:
    """The figure's title: the evaluation, then on a second line the model(s) it measured, so a saved PNG says
    what it shows (``"teacher student"`` alone named neither model)."""
    p = report.params
    name = report.name.replace("_", " ")
    if "teacher" in p and "student" in p:
        return f"{name}\n{p['teacher']} vs {p['student']}"
    return f"{name}\n{p['model']}" if "model" in p else name


def _plot_folds(report: Report, fig: Figure) -> None:
    """``linear_probe``: balanced accuracy per fold."""
    ax = fig.add_subplot(111)
    folds = [f"fold {r['fold']}" for r in report.rows]
    ax.bar(folds, [float(r["balanced_accuracy"]) for r in report.rows], color="tab:blue")
    ax.set(ylabel="balanced accuracy", ylim=(0, 1))
    ax.set_title(title(report), fontsize=10)


def _plot_rows(report: Report, fig: Figure) -> None:
    """The first numeric column: one bar per row, or its histogram when there are more than 12 rows."""
    ax = fig.add_subplot(111)
    first = report.rows[0] if report.rows else {}
    numeric = [k for k, v in first.items() if isinstance(v, float | np.floating)]
    if numeric and len(report.rows) > 12:
        ax.hist([float(r[numeric[0]]) for r in report.rows], bins=10, color="tab:green")
        ax.set(xlabel=numeric[0], ylabel="count")
    elif numeric:
        labels = [str(r.get("tile", r.get("slide_a", i))) for i, r in enumerate(report.rows)]
        ax.barh(labels, [float(r[numeric[0]]) for r in report.rows], color="tab:green")
        ax.set_xlabel(numeric[0])
    ax.set_title(title(report), fontsize=10)


def _plot_compare(report: Report, fig: Figure) -> None:
    """``compare``: throughput of both models, histogram of per-tile attention r, robustness medians (or a note
    that no robustness run was given, instead of an empty axis)."""
    s = report.summary
    if "teacher" in report.params and "student" in report.params:
        fig.suptitle(f"teacher {report.params['teacher']} vs student {report.params['student']}", fontsize=10)
    axes = fig.subplots(1, 3)
    axes[0].bar(
        ["teacher", "student"], [s["teacher_tiles_per_s"], s["student_tiles_per_s"]], color=["C0", "C1"]
    )
    ratio, cka = s["speed_ratio_student_over_teacher"], s["linear_cka"]
    axes[0].set(title=f"throughput (x{ratio:.1f}); CKA={cka:.2f}", ylabel="tiles / s")
    r = report.arrays["attention_r"]
    axes[1].hist(r[np.isfinite(r)], bins=20, range=(-1, 1), color="C2")
    axes[1].set(title="attention agreement", xlabel="Pearson r per tile", ylabel="tiles")
    _plot_robustness(axes[2], s)


#: what the robustness panel of a ``compare`` figure says when no robustness run was given
NO_ROBUSTNESS = "not given\n(pass --teacher-robustness /\n--student-robustness)"


def _plot_robustness(ax: Axes, summary: dict[str, float]) -> None:
    """Bars of the ``robustness/<model>/<metric>`` medians per model, or :data:`NO_ROBUSTNESS` without any."""
    rob: dict[str, dict[str, float]] = {}
    for key, v in summary.items():
        if key.startswith("robustness/"):
            _, model, metric = key.split("/", 2)
            rob.setdefault(model, {})[metric] = v
    ax.set_title("robustness (medians)")
    if not rob:
        ax.text(0.5, 0.5, NO_ROBUSTNESS, ha="center", va="center", transform=ax.transAxes, color="0.4")
        ax.set(xticks=[], yticks=[])
        return
    keys = sorted({k for v in rob.values() for k in v})
    for i, (model, vals) in enumerate(rob.items()):
        ax.bar(np.arange(len(keys)) + 0.4 * i, [vals.get(k, np.nan) for k in keys], width=0.4, label=model)
    ax.set_xticks(np.arange(len(keys)) + 0.2, keys, rotation=45, ha="right", fontsize=7)
    ax.set(ylim=(0, 1))
    ax.legend(fontsize=8)


PLOTS: dict[str, Callable[[Report, Figure], None]] = {"linear_probe": _plot_folds, "compare": _plot_compare}
