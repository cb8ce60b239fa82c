"""Run the PLISM robustness protocol over a manifest of slides: every pair, grouped and aggregated."""

from __future__ import annotations

import hashlib
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from napari_pathdistill.atomic import atomic_write_text
from napari_pathdistill.errors import EvaluationError
from napari_pathdistill.evaluation.features_io import check_one_embedding
from napari_pathdistill.evaluation.manifest import (
    SlideEntry,
    aggregate,
    all_pairs,
    leaderboard_metric,
    leaderboard_terms,
    pair_group,
)
from napari_pathdistill.evaluation.pair_loader import pair_loader
from napari_pathdistill.evaluation.plismbench_files import PairStore
from napari_pathdistill.evaluation.report import json_text, rows_csv
from napari_pathdistill.metrics.pairs import DEFAULT_KS, iter_pair_metrics, topk_pool_note
from napari_pathdistill.progress import Progress, drain


@dataclass
class RobustnessResult:
    """Per-pair rows, their aggregation and timing.

    Attributes:
        rows: one dict per pair: slide_a, slide_b, stain/scanner of both, group, cosine_similarity,
            top_{k}_accuracy.
        summary: ``{group: {metric: {mean, std, median, iqr, n_pairs}}}``.
        leaderboard: plismbench's leaderboard metric (``manifest.leaderboard_metric``: mean of the median
            cosine over all pairs and the median top-10 accuracy of the three cross groups, each rounded to
            3 decimals), None when undefined (``leaderboard_error`` says why).
        seconds_per_pair: wall time per computed pair (loading included), None when every pair was resumed.
        precision: "float32" or "mixed (float16, plismbench)".
        leaderboard_error: why the leaderboard is undefined (a needed pair group is empty), else "".
        n_resumed: pairs read back from the per-pair store instead of computed.
    """

    rows: list[dict]
    summary: dict
    leaderboard: float | None
    seconds_per_pair: float | None
    precision: str = "float32"
    leaderboard_error: str = ""
    n_resumed: int = 0

    def timing_line(self) -> str:
        """``0.021 s/pair over 40 computed pairs, 5 resumed``, or that every pair was resumed."""
        if self.seconds_per_pair is None:
            return (
                f"all {self.n_resumed} pairs resumed from pairs/ (none computed; --overwrite recomputes them)"
            )
        resumed = f", {self.n_resumed} resumed from pairs/" if self.n_resumed else ""
        computed = len(self.rows) - self.n_resumed
        return f"{self.seconds_per_pair:.3f} s/pair over {computed} computed pairs{resumed}"

    def leaderboard_line(self) -> str:
        """One line for the console: the value and its four terms, or why there is none."""
        if self.leaderboard is None:
            return f"leaderboard: undefined: {self.leaderboard_error}"
        terms = "  ".join(f"{k}={v:.3f}" for k, v in leaderboard_terms(self.summary).items())
        return f"leaderboard (plismbench, {self.precision}): {self.leaderboard:.3f} = mean of  {terms}"

    def topk_notes(self) -> list[str]:
        """One ``note:`` line per top-k accuracy that chance alone scores above ``MAX_TOPK_CHANCE`` on the
        pair with the fewest matched tiles (``metrics.pairs.topk_pool_note``), e.g. top-10 of 16 tiles."""
        sizes = [int(r["n_tiles"]) for r in self.rows if r.get("n_tiles")]
        if not sizes:
            return []
        n, notes = min(sizes), []
        for key in self.rows[0]:
            k = re.fullmatch(r"top_(\d+)_accuracy", key)
            if k and (why := topk_pool_note(n, int(k.group(1)))):
                notes.append(f"note: {key}: the smallest pair has {n} matched tiles: {why}")
        return notes

    def save(self, out_dir: str | Path) -> tuple[Path, Path]:
        """Write ``pairs.csv`` (one row per pair) and ``summary.json``; returns both paths."""
        csv_path, json_path = Path(out_dir) / "pairs.csv", Path(out_dir) / "summary.json"
        atomic_write_text(csv_path, rows_csv(self.rows))
        payload = {
            "summary": self.summary,
            "leaderboard": self.leaderboard,
            "leaderboard_terms": leaderboard_terms(self.summary) if self.leaderboard is not None else None,
            "leaderboard_error": self.leaderboard_error,
            "precision": self.precision,
            "seconds_per_pair": self.seconds_per_pair,
            "n_pairs": len(self.rows),
            "n_resumed": self.n_resumed,
        }
        atomic_write_text(json_path, json_text(payload))
        return csv_path, json_path


def _pair_row(a: SlideEntry, b: SlideEntry, metrics: dict) -> dict:
    return {
        "slide_a": a.slide,
        "slide_b": b.slide,
        "stain_a": a.stain,
        "stain_b": b.stain,
        "scanner_a": a.scanner,
        "scanner_b": b.scanner,
        "group": pair_group(a, b) or "same",
        **metrics,
    }


def _finish(
    rows: list[dict], ks: Sequence[int], seconds: float | None, precision: str, n_resumed: int
) -> RobustnessResult:
    summary = aggregate(rows, ["cosine_similarity"] + [f"top_{k}_accuracy" for k in ks])
    try:
        board, why = leaderboard_metric(summary), ""
    except EvaluationError as err:
        board, why = None, str(err)
    return RobustnessResult(rows, summary, board, seconds, precision, why, n_resumed)


def _file_stamp(path: Path | None) -> str:
    """``size:mtime_ns`` of a features file ("" when it has none): a re-extracted file gets a new stamp."""
    if path is None or not Path(path).is_file():
        return ""
    st = Path(path).stat()
    return f"{st.st_size}:{st.st_mtime_ns}"


def _subset_key(subset: np.ndarray | None) -> str:
    """Which tiles were evaluated: "all", or a digest of the subset's indices."""
    if subset is None:
        return "all"
    return hashlib.sha1(np.ascontiguousarray(subset, dtype=np.int64).tobytes()).hexdigest()[:16]


def _run_keys(a: SlideEntry, b: SlideEntry, precision: str, subset: str) -> dict[str, object]:
    """What a saved pair must share with this run to be resumed: precision, tile subset and both files."""
    return {"precision": precision, "subset": subset, "files": [_file_stamp(a.path), _file_stamp(b.path)]}


def _resumed(
    store: PairStore | None, pairs: Sequence[tuple[SlideEntry, SlideEntry]], ks: Sequence[int], keys: Callable
) -> dict[tuple[str, str], dict]:
    """The pairs of ``store`` computed with (at least) this run's k values and the same :func:`_run_keys`, as
    rows of this run's metrics only: a pair saved at another precision, on another tile subset or from features
    re-extracted since is recomputed."""
    needed = {"cosine_similarity", *(f"top_{k}_accuracy" for k in ks)}
    saved: dict[tuple[str, str], dict] = {}
    if store is None:
        return saved
    for a, b in pairs:
        row, want = store.get(a.slide, b.slide), keys(a, b)
        if row is not None and needed <= row.keys() and all(row.get(k) == v for k, v in want.items()):
            saved[a.slide, b.slide] = {k: v for k, v in row.items() if k in needed or k == "n_tiles"}
    return saved


def iter_robustness(
    entries: Sequence[SlideEntry],
    ks: Sequence[int] = DEFAULT_KS,
    *,
    subset: np.ndarray | None = None,
    device: str | torch.device | None = "auto",
    block: int = 2048,
    mixed_precision: bool = False,
    strict_coords: bool = False,
    store: PairStore | None = None,
    cancel: threading.Event | None = None,
) -> Iterator[Progress | RobustnessResult]:
    """PLISM metrics for every pair of ``entries`` (features in matching row order), then aggregation.

    Args:
        entries: slides with a features ``path`` (.h5 or plismbench .npy); all with the same tiles.
        ks: top-k values.
        subset: optional (n,) tile indices used for every slide (plismbench's 8,139-tile subset).
        device: torch device ("auto" = CUDA when present).
        block: queries per matmul.
        mixed_precision: plismbench's float16 order of operations (``metrics.pairs.pair_metrics``).
        strict_coords: differing coordinates between two slides are an error (plismbench) instead of
            matching the common ones.
        store: optional per-pair results store: pairs found there are not recomputed, new ones are saved.
        cancel: optional event that stops the run (raises ``Cancelled``).

    Yields:
        ``Progress`` items, then one ``RobustnessResult``.
    """
    if len(entries) < 2:
        raise EvaluationError("the manifest needs at least two slides")
    check_one_embedding(entries)
    by_name = {e.slide: e for e in entries}
    pairs = all_pairs(list(entries))
    names = [(a.slide, b.slide) for a, b in pairs]
    precision = "mixed (float16, plismbench)" if mixed_precision else "float32"
    subset_key = _subset_key(subset)

    def keys(a: SlideEntry, b: SlideEntry) -> dict[str, object]:
        return _run_keys(a, b, precision, subset_key)

    saved = _resumed(store, pairs, ks, keys)
    todo = [p for p in names if p not in saved]
    load_pair = pair_loader(entries, subset, strict_coords)
    t0 = time.perf_counter()
    gen = iter_pair_metrics(
        todo, load_pair, ks, device=device, block=block, mixed_precision=mixed_precision, cancel=cancel
    )
    for item in gen:
        if isinstance(item, Progress):
            yield Progress(item.done + len(names) - len(todo), len(names), item.stage)
            continue
        sa, sb, m = item
        row = {"n_tiles": m.n_tiles, **m.as_row()}
        saved[(sa, sb)] = row
        if store is not None:
            store.put(sa, sb, {**row, **keys(by_name[sa], by_name[sb])})
    rows = [_pair_row(by_name[sa], by_name[sb], saved[(sa, sb)]) for sa, sb in names]
    seconds = (time.perf_counter() - t0) / len(todo) if todo else None
    yield _finish(rows, ks, seconds, precision, len(names) - len(todo))


def run_robustness(entries: Sequence[SlideEntry], ks: Sequence[int] = DEFAULT_KS, **kw) -> RobustnessResult:
    """Blocking wrapper of :func:`iter_robustness` (returns its final result)."""
    result = drain(iter_robustness(entries, ks, **kw))
    assert isinstance(result, RobustnessResult)
    return result
