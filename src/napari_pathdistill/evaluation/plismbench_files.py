"""plismbench's tile subsets and output files, written exactly as ``plismbench evaluate`` writes them.

Source read: owkin/plism-benchmark ``plismbench/engine/evaluate.py`` (``compute_metrics``),
``plismbench/utils/evaluate.py`` (``get_tiles_subset_idx``, ``prepare_pairs_dataframe``),
``plismbench/utils/aggregate.py`` (``get_results``, ``format_results``, ``pad``) and ``utils/metrics.py``
(``format_results`` reads ``results.csv`` back). Layout under ``--metrics-dir``::

    <metrics_dir>/<n_tiles>_tiles/<extractor>/metrics.csv   one row per pair
    <metrics_dir>/<n_tiles>_tiles/<extractor>/results.csv   4 robustness types x metrics, "mean (std) ; median (iqr)"
    <metrics_dir>/<n_tiles>_tiles/<extractor>/pairs/<a>---<b>.json   ours: per-pair results (resume)

plismbench keeps per-pair pickles in ``pickles/``; we never unpickle, so our per-pair files are JSON.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from urllib.parse import quote

import numpy as np

from napari_pathdistill.atomic import atomic_write_text
from napari_pathdistill.errors import EvaluationError
from napari_pathdistill.evaluation.manifest import round3

PLISM_TILES: int = 16_278
DEFAULT_N_TILES: int = PLISM_TILES // 2  # 8,139: plismbench's default and the leaderboard's
SUPPORTED_N_TILES: tuple[int, ...] = (460, 2_713, 5_426, 8_139, 16_278)
#: our group name -> plismbench's robustness type, in the row order of its results.csv
ROBUSTNESS_TYPES: dict[str, str] = {
    "cross-scanner": "inter-scanner",
    "cross-staining": "inter-staining",
    "cross-both": "inter-scanner, inter-staining",
    "all": "all",
}
PAIR_COLUMNS: tuple[str, ...] = (
    "slide_a", "features_path_a", "staining_a", "scanner_a",
    "slide_b", "features_path_b", "staining_b", "scanner_b",
)  # fmt: skip


def tile_subset(n_tiles: int | None, n_rows: int) -> np.ndarray | None:
    """Row indices plismbench evaluates (``get_tiles_subset_idx``), from the subset files shipped here.

    Args:
        n_tiles: 460, 2713, 5426, 8139 or 16278 (PLISM features only), or None: 8,139 when the slides have
            PLISM's 16,278 tiles, else every tile.
        n_rows: tiles per slide in the features.

    Returns:
        (n_tiles,) int64 indices, or None for all rows.
    """
    if n_tiles is None:
        if n_rows != PLISM_TILES:
            return None
        n_tiles = DEFAULT_N_TILES
    if n_tiles not in SUPPORTED_N_TILES:
        raise EvaluationError(
            f"--n-tiles must be one of {list(SUPPORTED_N_TILES)} (plismbench's), got {n_tiles}"
        )
    if n_rows != PLISM_TILES:
        raise EvaluationError(
            f"--n-tiles selects plismbench's subsets of PLISM's {PLISM_TILES} tiles, but these slides have "
            f"{n_rows}; leave --n-tiles out to use every tile"
        )
    if n_tiles == PLISM_TILES:
        return np.arange(PLISM_TILES)
    ref = (
        resources.files("napari_pathdistill.evaluation") / "plismbench_assets" / f"tiles_subset_{n_tiles}.npy"
    )
    with resources.as_file(ref) as path:
        idx = np.load(path, allow_pickle=False)
    if idx.ndim != 1 or len(np.unique(idx)) != n_tiles:  # plismbench asserts the same
        raise EvaluationError(f"{ref}: expected {n_tiles} distinct tile indices; reinstall the package")
    return idx


def _csv(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """CSV text as pandas' ``to_csv`` writes it (minimal quoting, ``\\n`` line ends, floats as ``repr``)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows([[repr(v) if isinstance(v, float) else str(v) for v in row] for row in rows])
    return buf.getvalue()


def write_metrics_csv(path: Path, rows: Sequence[dict], metrics: Sequence[str]) -> Path:
    """plismbench's ``metrics.csv``: pair columns, then cosine and top-k; sorted by the two features paths."""
    ordered = sorted(rows, key=lambda r: (str(r["features_path_a"]), str(r["features_path_b"])))
    body = [[r[c] for c in (*PAIR_COLUMNS, *metrics)] for r in ordered]
    return atomic_write_text(path, _csv([*PAIR_COLUMNS, *metrics], body))


def _pad(x: float) -> str:
    """plismbench's ``pad``: ``str`` of the 3-decimal value, right-padded with zeros to 5 characters."""
    return str(x).ljust(5, "0")


def results_cell(stats: dict) -> str:
    """One results.csv cell, ``"mean (std) ; median (iqr)"``, each value rounded to 3 decimals first (numpy's
    rounding, as plismbench's ``DataFrame.round(3)``)."""
    m, s, med, q = (round3(stats[k]) for k in ("mean", "std", "median", "iqr"))
    return f"{_pad(m)} ({_pad(s)}) ; {_pad(med)} ({_pad(q)})"


def write_results_csv(path: Path, summary: dict, metrics: Sequence[str]) -> Path:
    """plismbench's ``results.csv``: index = robustness type, one cell per metric (see :func:`results_cell`).

    Raises:
        EvaluationError: a robustness type has no pair (plismbench would write NaN cells).
    """
    missing = [g for g in ROBUSTNESS_TYPES if g not in summary]
    if missing:
        raise EvaluationError(f"results.csv needs pairs of every robustness type; none of: {missing}")
    body = [[ROBUSTNESS_TYPES[g], *(results_cell(summary[g][m]) for m in metrics)] for g in ROBUSTNESS_TYPES]
    return atomic_write_text(path, _csv(["", *metrics], body))


_SAFE = " !#$&'()+,;=@[]^`{}~"  # kept as they are in a pair's file name (with letters, digits and _.-)


class PairStore:
    """Per-pair results under ``<dir>/pairs/`` so an interrupted run resumes (one JSON per pair, atomic).

    A pair is named by its slides' names (plismbench's key), plus an optional ``key`` where names alone are
    ambiguous: slide pairs of two folders holding same-named slides (``A/slide_01.svs`` vs ``B/slide_01.svs`` of
    two cohorts) shared one file, each overwriting the other, so neither ever resumed.
    """

    def __init__(self, root: Path, overwrite: bool = False) -> None:
        self.dir = root / "pairs"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.overwrite = overwrite

    def _path(self, sa: str, sb: str, key: str = "") -> Path:
        """``<a>---<b>[.<key>].json``; characters a file name cannot hold are %-escaped."""
        name = f"{quote(sa, safe=_SAFE)}---{quote(sb, safe=_SAFE)}"
        return self.dir / (f"{name}.{quote(key, safe=_SAFE)}.json" if key else f"{name}.json")

    def get(self, sa: str, sb: str, key: str = "") -> dict | None:
        """Saved metrics of a pair, or None (absent, unreadable, or ``overwrite``). With a ``key``, a file named
        without it (an earlier version's) is read when the keyed one is absent: the caller's stamp decides."""
        if self.overwrite:
            return None
        for path in (self._path(sa, sb, key), self._path(sa, sb)) if key else (self._path(sa, sb),):
            if path.is_file():
                try:
                    return json.loads(path.read_text())
                except (OSError, ValueError):
                    return None
        return None

    def put(self, sa: str, sb: str, row: dict, key: str = "") -> None:
        """Save one pair's metrics."""
        atomic_write_text(self._path(sa, sb, key), json.dumps(row))
