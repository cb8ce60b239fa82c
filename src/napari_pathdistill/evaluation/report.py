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
import math
import re
import textwrap
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
        atomic_write_text(paths["json"], json_text(asdict(self)))
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


def _finite(value: object) -> object:
    """``value`` with every NaN / inf float (numpy's included) replaced by None, containers walked."""
    if isinstance(value, np.ndarray | np.generic):
        value = value.tolist()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def json_text(obj: object) -> str:
    """Strict JSON of ``obj`` (indent 2): a NaN or inf (a failed pair, an undefined correlation) is ``null``.

    ``json.dumps`` writes them as the bare tokens ``NaN`` / ``Infinity``, which are not JSON: ``jq``, a browser's
    ``JSON.parse`` and other strict readers refuse the whole file.
    """
    return json.dumps(_finite(obj), indent=2, default=_jsonable, allow_nan=False)


def write_json(path: str | Path, obj: object) -> Path:
    """Write :func:`json_text` of ``obj`` to ``path`` atomically; returns the path."""
    return atomic_write_text(Path(path), json_text(obj))


def title(report: Report) -> str:
    """The figure's title: the evaluation, then on a second line the model(s) it measured, so a saved PNG says
    what it shows (``"teacher student"`` alone named neither model)."""
    p = report.params
    name = report.name.replace("_", " ")
    if "teacher" in p and "student" in p:
        return f"{name}\n{p['teacher']} vs {p['student']}"
    return f"{name}\n{p['model']}" if "model" in p else name


#: points per character of the titles' font, per point of font size (DejaVu Sans averages ~0.55 em; wider
#: is safer: a title one character too long is cut at the figure's edge)
_CHAR_EM = 0.62


def set_title(fig: Figure, text: str, fontsize: float = 10) -> None:
    """``text`` as the figure's title, centred on the figure and wrapped to its width.

    A title centred on an axis that long tick labels push to the right was cut at the figure's right edge in
    the Evaluate dock ("efficientnet-lite2-imagenet vs pathdi"): each line is wrapped at spaces (a longer word is split)
    to the characters that fit the figure's width when it is drawn.
    """
    width = max(12, math.floor(0.94 * fig.get_figwidth() * 72 / (_CHAR_EM * fontsize)))
    lines = [
        w for line in text.split("\n") for w in textwrap.wrap(line, width, break_on_hyphens=False) or [""]
    ]
    fig.suptitle("\n".join(lines), fontsize=fontsize)


def short_name(name: str, max_chars: int = 22) -> str:
    """A file name for a plot label: without its extension(s), middle elided past ``max_chars``."""
    stem = re.sub(r"(\.[A-Za-z][A-Za-z0-9]{0,4})+$", "", name) or name
    if len(stem) <= max_chars:
        return stem
    keep = max_chars - 1
    return stem[: (keep + 1) // 2] + "\u2026" + stem[len(stem) - keep // 2 :]


def pair_label(a: str, b: str, max_chars: int = 22, sep: str = " ") -> str:
    """``"<a> vs <b>"`` for a slide pair's bar: both short names, the start they share written once.

    ``OS-2-ndpi.ome.tif``, ``OS-2-vsi.ome.tif`` -> ``"OS-2-ndpi vs \u2026vsi"``; pairs sharing slide A stay
    apart (the robustness bars were labelled with slide A only).
    """
    sa, sb = short_name(a, 10**6), short_name(b, 10**6)
    common = next((i for i, (x, y) in enumerate(zip(sa, sb, strict=False)) if x != y), min(len(sa), len(sb)))
    cut = max((i + 1 for i, ch in enumerate(sa[:common]) if ch in "-_. "), default=0)  # ends at a separator
    if 4 <= cut < len(sb):
        sb = "\u2026" + sb[cut:]
    return f"{short_name(sa, max_chars)}{sep}vs {short_name(sb, max_chars)}"


def _row_label(row: dict[str, Cell], i: int, two_lines: bool) -> str:
    """A bar's label: the tile, or both slides of a pair (on two lines when there is room: a dock is narrow)."""
    if "tile" in row:
        return short_name(str(row["tile"]), 28)
    if "slide_a" in row and "slide_b" in row:
        return pair_label(str(row["slide_a"]), str(row["slide_b"]), sep="\n" if two_lines else " ")
    return str(i + 1)


def _plot_folds(report: Report, fig: Figure) -> None:
    """``linear_probe``: balanced accuracy per fold."""
    ax = fig.add_subplot(111)
    folds = [f"fold {r['fold']}" for r in report.rows]
    ax.bar(folds, [float(r["balanced_accuracy"]) for r in report.rows], color="tab:blue")
    ax.set(ylabel="balanced accuracy", ylim=(0, 1))
    set_title(fig, title(report))


def _plot_rows(report: Report, fig: Figure) -> None:
    """The first numeric column: one bar per row (labelled by tile, or by both slides of a pair), or its
    histogram when there are more than 12 rows; a dashed line marks its chance level when the summary has one
    (``knn5_overlap`` -> ``knn5_chance``)."""
    ax = fig.add_subplot(111)
    first = report.rows[0] if report.rows else {}
    numeric = [k for k, v in first.items() if isinstance(v, float | np.floating)]
    if numeric and len(report.rows) > 12:
        column = np.asarray([float(r[numeric[0]]) for r in report.rows])
        finite = column[np.isfinite(column)]  # failed pairs are NaN: numpy's range failed on all-NaN
        ax.hist(finite, bins=10, color="tab:green")
        ax.set(xlabel=numeric[0], ylabel="count")
        if len(finite) < len(column):
            ax.set_title(f"{len(column) - len(finite)} of {len(column)} rows failed or n/a", fontsize=8)
    elif numeric:
        values = [float(r[numeric[0]]) for r in report.rows]
        y = np.arange(len(values))  # positions, not category names: equal labels must not share one bar
        ax.barh(y, values, color="tab:green")
        two_lines = len(values) <= 6
        ax.set_yticks(y, [_row_label(r, i, two_lines) for i, r in enumerate(report.rows)], fontsize=8)
        ax.invert_yaxis()  # first row on top, as in the table
        for i, (v, r) in enumerate(zip(values, report.rows, strict=True)):
            if not np.isfinite(v):
                ax.text(0, i, " failed" if r.get("error") else " n/a", va="center", fontsize=8, color="0.4")
        ax.set_xlabel(numeric[0])
    if numeric:
        chance = report.summary.get(numeric[0].split("_")[0] + "_chance")
        if chance is not None and np.isfinite(chance):
            ax.axvline(chance, color="0.3", linestyle="--", linewidth=1, label=f"chance {chance:.2f}")
            ax.legend(fontsize=7, loc="best")
    set_title(fig, title(report))


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


#: the robustness medians of plismbench's leaderboard (``get_leaderboard_results``): the compare figure's panel
LEADERBOARD_TERMS = (
    "cosine_similarity__all",
    "top_10_accuracy__cross-scanner",
    "top_10_accuracy__cross-staining",
    "top_10_accuracy__cross-both",
)


def _plot_robustness(ax: Axes, summary: dict[str, float]) -> None:
    """Horizontal bars of the ``robustness/<model>/<metric>`` medians per model: the leaderboard's terms
    (:data:`LEADERBOARD_TERMS`) when the runs have all four, else every median; :data:`NO_ROBUSTNESS` without any.
    (All 20 medians as vertical bars were unreadable: labels on top of each other, the legend over the bars.)"""
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
    found = {k for v in rob.values() for k in v}
    keys = list(LEADERBOARD_TERMS) if found >= set(LEADERBOARD_TERMS) else sorted(found)
    y, height = np.arange(len(keys)), 0.8 / len(rob)
    for i, (model, vals) in enumerate(rob.items()):
        ax.barh(y + height * i, [vals.get(k, np.nan) for k in keys], height=height, label=model)
    labels = [k.replace("cosine_similarity", "cosine").replace("_accuracy", "").replace("top_", "top-")
              .replace("__", "\n") for k in keys]  # fmt: skip
    ax.set_yticks(y + height * (len(rob) - 1) / 2, labels, fontsize=7)
    ax.invert_yaxis()  # the leaderboard's order, top down
    ax.set(xlim=(0, 1))
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.08), ncol=len(rob), frameon=False)


PLOTS: dict[str, Callable[[Report, Figure], None]] = {"linear_probe": _plot_folds, "compare": _plot_compare}
