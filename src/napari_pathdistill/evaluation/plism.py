"""Run the PLISM robustness protocol over a manifest of slides: every pair, grouped and aggregated."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from napari_pathdistill.atomic import atomic_write_text
from napari_pathdistill.errors import EvaluationError
from napari_pathdistill.evaluation.features_io import load_features, match_by_coords
from napari_pathdistill.evaluation.manifest import (
    SlideEntry,
    aggregate,
    all_pairs,
    leaderboard_metric,
    pair_group,
)
from napari_pathdistill.evaluation.report import rows_csv
from napari_pathdistill.metrics.pairs import DEFAULT_KS, iter_pair_metrics
from napari_pathdistill.progress import Progress, drain


@dataclass
class RobustnessResult:
    """Per-pair rows, their aggregation and timing.

    Attributes:
        rows: one dict per pair: slide_a, slide_b, stain/scanner of both, group, cosine_similarity,
            top_{k}_accuracy.
        summary: ``{group: {metric: {mean, std, median, iqr, n_pairs}}}``.
        leaderboard: mean of the four medians of top-10 accuracy (see ``manifest.leaderboard_metric``).
        seconds_per_pair: wall time per pair (metrics only, loading included).
    """

    rows: list[dict]
    summary: dict
    leaderboard: float
    seconds_per_pair: float

    def save(self, out_dir: str | Path) -> tuple[Path, Path]:
        """Write ``pairs.csv`` (one row per pair) and ``summary.json``; returns both paths."""
        csv_path, json_path = Path(out_dir) / "pairs.csv", Path(out_dir) / "summary.json"
        atomic_write_text(csv_path, rows_csv(self.rows))
        payload = {
            "summary": self.summary,
            "leaderboard_top10_mean_of_medians": self.leaderboard,
            "seconds_per_pair": self.seconds_per_pair,
            "n_pairs": len(self.rows),
        }
        atomic_write_text(json_path, json.dumps(payload, indent=2))
        return csv_path, json_path


def _pair_loader(
    entries: Sequence[SlideEntry], subset: np.ndarray | None
) -> Callable[[str, str], tuple[np.ndarray, np.ndarray]]:
    """Matched features of two slides; every slide is kept in memory once read (it is in n_slides - 1 pairs).

    Rows are matched by position when both slides have identical coordinates (PLISM, offline benchmark), else
    by equal coordinates (tiles of registered slides written by ``pathdistill embed``). With plismbench's
    8,139-tile subset and 768-d features, 91 slides take 2.3 GB of float32.
    """
    paths = {e.slide: e.path for e in entries}
    cache: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def load(slide: str) -> tuple[np.ndarray, np.ndarray]:
        if slide not in cache:
            path = paths[slide]
            if path is None:
                raise EvaluationError(f"manifest row {slide!r} has no features path")
            feats, coords = load_features(path)
            cache[slide] = (feats, coords) if subset is None else (feats[subset], coords[subset])
        return cache[slide]

    def load_pair(sa: str, sb: str) -> tuple[np.ndarray, np.ndarray]:
        (fa, ca), (fb, cb) = load(sa), load(sb)
        if ca.shape == cb.shape and np.array_equal(ca, cb):
            return fa, fb
        ia, ib = match_by_coords(ca, cb)
        if len(ia) < 2:
            raise EvaluationError(f"{sa} and {sb} share fewer than 2 tile coordinates; are they registered?")
        return fa[ia], fb[ib]

    return load_pair


def iter_robustness(
    entries: Sequence[SlideEntry],
    ks: Sequence[int] = DEFAULT_KS,
    *,
    subset: np.ndarray | None = None,
    device: str | torch.device | None = "auto",
    block: int = 2048,
    cancel: threading.Event | None = None,
) -> Iterator[Progress | RobustnessResult]:
    """PLISM metrics for every pair of ``entries`` (features in matching row order), then aggregation.

    Args:
        entries: slides with a features ``path`` (.h5 or plismbench .npy); all with the same tiles.
        ks: top-k values.
        subset: optional (n,) tile indices used for every slide (plismbench's 8,139-tile subset).
        device: torch device ("auto" = CUDA when present).
        block: queries per matmul.
        cancel: optional event that stops the run (raises ``Cancelled``).

    Yields:
        ``Progress`` items, then one ``RobustnessResult``.
    """
    if len(entries) < 2:
        raise EvaluationError("the manifest needs at least two slides")
    by_name = {e.slide: e for e in entries}
    pairs = all_pairs(list(entries))
    load_pair = _pair_loader(entries, subset)
    rows: list[dict] = []
    t0 = time.perf_counter()
    names = [(a.slide, b.slide) for a, b in pairs]
    for item in iter_pair_metrics(names, load_pair, ks, device=device, block=block, cancel=cancel):
        if isinstance(item, Progress):
            yield item
            continue
        sa, sb, m = item
        a, b = by_name[sa], by_name[sb]
        rows.append(
            {
                "slide_a": sa,
                "slide_b": sb,
                "stain_a": a.stain,
                "stain_b": b.stain,
                "scanner_a": a.scanner,
                "scanner_b": b.scanner,
                "group": pair_group(a, b) or "same",
                "n_tiles": m.n_tiles,
                **m.as_row(),
            }
        )
    elapsed = time.perf_counter() - t0
    metrics = ["cosine_similarity"] + [f"top_{k}_accuracy" for k in ks]
    summary = aggregate(rows, metrics)
    board = leaderboard_metric(summary) if 10 in ks else float("nan")
    yield RobustnessResult(rows, summary, board, elapsed / max(1, len(rows)))


def run_robustness(entries: Sequence[SlideEntry], ks: Sequence[int] = DEFAULT_KS, **kw) -> RobustnessResult:
    """Blocking wrapper of :func:`iter_robustness` (returns its final result)."""
    result = drain(iter_robustness(entries, ks, **kw))
    assert isinstance(result, RobustnessResult)
    return result
