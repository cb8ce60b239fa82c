"""Slide manifests, slide-pair lists, plismbench pair grouping and aggregation (medians, IQR, leaderboard metric).

A manifest is a CSV with at least the columns ``slide, stain, scanner`` (one row per slide, plismbench's
``staining``/``scanner`` naming is accepted too) and optionally ``path`` (features file, relative to the CSV)
and ``tissue`` (pairs are only formed within one tissue; PLISM has a single tissue block, so leave it empty).
Every unordered pair of distinct slides is evaluated and falls in one group, as in
``plismbench.utils.aggregate.get_results``:

* ``cross-scanner``: same stain, different scanner (plismbench "inter-scanner");
* ``cross-staining``: same scanner, different stain (plismbench "inter-staining");
* ``cross-both``: different stain and different scanner;
* ``all``: every pair (pairs of slides sharing both labels are only counted here).

A pair list (:func:`read_pairs`, the Evaluate widget's robustness input) names the slide pairs directly: a CSV
with columns ``slide_a,slide_b`` (or BIRL's ``Target image,Source image``) of slide files.
"""

from __future__ import annotations

import csv
import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from napari_pathdistill.errors import EvaluationError

GROUPS: tuple[str, ...] = ("cross-scanner", "cross-staining", "cross-both", "all")


@dataclass(frozen=True)
class SlideEntry:
    """One manifest row."""

    slide: str
    stain: str
    scanner: str
    path: Path | None = None
    tissue: str = ""  # pairs are only formed between slides of the same tissue (PLISM: one tissue block)


def read_manifest(path: str | Path) -> list[SlideEntry]:
    """Read a ``slide,stain,scanner[,path][,tissue]`` CSV (robustness needs ``path``); relative paths resolve
    against the CSV's folder."""
    path = Path(path)
    if not path.is_file():
        raise EvaluationError(f"manifest not found: {path}")
    with path.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    if not rows:
        raise EvaluationError(f"manifest {path} has no rows")
    cols = {c.strip().lower() for c in rows[0]}
    stain_col = "stain" if "stain" in cols else "staining"
    if not {"slide", stain_col, "scanner"} <= cols:
        raise EvaluationError(f"manifest {path} needs columns slide, stain, scanner (found {sorted(cols)})")
    out = []
    for row in rows:
        row = {k.strip().lower(): (v or "").strip() for k, v in row.items()}
        p = Path(row["path"]) if row.get("path") else None
        out.append(
            SlideEntry(
                row["slide"],
                row[stain_col],
                row["scanner"],
                p if p is None or p.is_absolute() else path.parent / p,
                row.get("tissue", ""),
            )
        )
    names = [e.slide for e in out]
    if len(set(names)) != len(names):
        raise EvaluationError(f"manifest {path} lists a slide twice")
    return out


def read_pairs(csv_path: str | Path) -> list[tuple[Path, Path]]:
    """Slide pairs from a CSV with columns ``slide_a,slide_b`` (or BIRL's ``Target image,Source image``).

    Relative paths are resolved against the CSV's folder.

    Raises:
        EvaluationError: one line saying what is wrong with the file: missing, not a text CSV (e.g. an image
            chosen by mistake), empty, without those columns, without any pair under its header, or a line
            with an empty slide cell.
    """
    path = Path(csv_path)
    need = "give a CSV with columns slide_a,slide_b and one slide pair per line"
    if path.is_dir():  # e.g. the tiles folder of the previous task, still in the widget's input box
        raise EvaluationError(f"'{path}' is a folder, not a pair list: {need}.")
    if not path.is_file():
        raise EvaluationError(f"Pair list '{path}' not found: {need}.")
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:  # -sig: a spreadsheet's byte-order mark
            reader = csv.reader(fh)
            lines = [(reader.line_num, [c.strip() for c in r]) for r in reader if any(c.strip() for c in r)]
    except (UnicodeDecodeError, csv.Error) as exc:
        why = "not UTF-8 text" if isinstance(exc, UnicodeDecodeError) else str(exc)
        raise EvaluationError(f"{path.name} is not a CSV file ({why}): {need}.") from exc
    header, rows = (lines[0][1], lines[1:]) if lines else ([], [])
    if not header:
        raise EvaluationError(f"{path.name} is empty: {need}.")
    for ka, kb in (("slide_a", "slide_b"), ("Target image", "Source image")):
        if ka in header and kb in header:
            break
    else:
        raise EvaluationError(
            f"{path.name} has no slide_a,slide_b columns (nor Target image,Source image); its header is "
            f"{','.join(header)[:120]}."
        )
    if not rows:
        raise EvaluationError(
            f"{path.name} has the columns {ka},{kb} but no pairs: add one line per slide pair."
        )
    ia, ib = header.index(ka), header.index(kb)
    pairs = []
    for line, row in rows:
        cells = row + [""] * (len(header) - len(row))
        if not cells[ia] or not cells[ib]:
            raise EvaluationError(f"{path.name} line {line}: {ka if not cells[ia] else kb} is empty.")
        pairs.append((path.parent / cells[ia], path.parent / cells[ib]))
    return pairs


def write_manifest(entries: Iterable[SlideEntry], path: str | Path) -> Path:
    """Write a manifest CSV (paths written relative to the CSV when possible)."""
    path = Path(path)
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["slide", "stain", "scanner", "path", "tissue"])
        for e in entries:
            p = "" if e.path is None else str(_relative(e.path, path.parent))
            w.writerow([e.slide, e.stain, e.scanner, p, e.tissue])
    return path


def _relative(p: Path, root: Path) -> Path:
    try:
        return Path(p).resolve().relative_to(root.resolve())
    except ValueError:
        return Path(p)


def pair_group(a: SlideEntry, b: SlideEntry) -> str | None:
    """Group of a pair: "cross-scanner", "cross-staining", "cross-both" or None (same stain and scanner)."""
    same_stain, same_scanner = a.stain == b.stain, a.scanner == b.scanner
    if same_stain and not same_scanner:
        return "cross-scanner"
    if same_scanner and not same_stain:
        return "cross-staining"
    if not same_stain and not same_scanner:
        return "cross-both"
    return None


def all_pairs(entries: list[SlideEntry]) -> list[tuple[SlideEntry, SlideEntry]]:
    """Every unordered pair of distinct slides of the same tissue, in manifest order (91 PLISM slides -> 4,095)."""
    return [(a, b) for a, b in itertools.combinations(entries, 2) if a.tissue == b.tissue]


def iqr(x: np.ndarray) -> float:
    """Inter-quartile range ``q75 - q25`` (numpy's linear interpolation, as plismbench)."""
    return float(np.quantile(x, 0.75) - np.quantile(x, 0.25))


def aggregate(rows: Sequence[Mapping[str, object]], metrics: Iterable[str]) -> dict[str, dict[str, dict]]:
    """Mean, std, median and IQR of every metric over the pairs of each group.

    Args:
        rows: one dict per pair with a ``group`` key and the metric values.
        metrics: metric column names, e.g. ``cosine_similarity``, ``top_10_accuracy``.

    Returns:
        ``{group: {metric: {"mean", "std", "median", "iqr", "n_pairs"}}}``; groups without pairs are omitted.
    """
    metrics = list(metrics)
    out: dict[str, dict[str, dict]] = {}
    for group in GROUPS:
        sel = [r for r in rows if group == "all" or r["group"] == group]
        if not sel:
            continue
        out[group] = {}
        for m in metrics:
            v = np.asarray([float(r[m]) for r in sel])  # type: ignore[arg-type]
            out[group][m] = {
                "mean": float(v.mean()),
                "std": float(v.std()),
                "median": float(np.median(v)),
                "iqr": iqr(v),
                "n_pairs": len(v),
            }
    return out


#: plismbench's leaderboard (README "Benchmark" table, ``utils/metrics.py::get_leaderboard_results``): the
#: (group, metric) medians it averages, in its column order.
LEADERBOARD_TERMS: tuple[tuple[str, str], ...] = (
    ("all", "cosine_similarity"),
    ("cross-scanner", "top_10_accuracy"),
    ("cross-staining", "top_10_accuracy"),
    ("cross-both", "top_10_accuracy"),
)


def round3(x: float) -> float:
    """Round to 3 decimals as pandas' ``DataFrame.round(3)`` in plismbench: ``np.round`` (``rint(x * 1000) /
    1000``), not Python's ``round`` (0.0125 -> 0.012 with numpy, 0.013 with Python)."""
    return float(np.round(np.float64(x), 3))


def leaderboard_terms(agg: Mapping[str, Mapping[str, Mapping[str, float]]]) -> dict[str, float]:
    """The four medians of plismbench's leaderboard, each rounded to 3 decimals as its ``results.csv`` holds them.

    Args:
        agg: output of :func:`aggregate` with ``cosine_similarity`` and ``top_10_accuracy``.

    Returns:
        ``{"<metric> (<group>)": median}`` in :data:`LEADERBOARD_TERMS` order.

    Raises:
        EvaluationError: a group or metric the leaderboard needs is missing (no pair of that kind, or top-10
            not computed); the leaderboard is then undefined, never an average of what exists.
    """
    out = {}
    for group, metric in LEADERBOARD_TERMS:
        if group not in agg:
            raise EvaluationError(
                f"the PLISM leaderboard needs the median {metric} over {group} pairs, but there are none "
                f"(groups present: {sorted(agg)}). It needs slides of at least two stainings and two scanners, "
                "with both stainings on one scanner and both scanners on one staining."
            )
        if metric not in agg[group]:
            raise EvaluationError(
                f"the PLISM leaderboard needs the median {metric} over {group} pairs, but it was not computed "
                f"(metrics: {', '.join(agg[group])}): include 10 in --top-k."
            )
        out[f"{metric} ({group})"] = round3(agg[group][metric]["median"])
    return out


def leaderboard_metric(agg: Mapping[str, Mapping[str, Mapping[str, float]]]) -> float:
    """plismbench's leaderboard metric: mean of :func:`leaderboard_terms` (median cosine over all pairs, median
    top-10 accuracy over cross-scanner, cross-staining and cross-both pairs, each rounded to 3 decimals).

    Raises:
        EvaluationError: as :func:`leaderboard_terms`.
    """
    return float(np.mean(list(leaderboard_terms(agg).values())))
