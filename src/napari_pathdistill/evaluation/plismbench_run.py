"""``plismbench evaluate``'s run, reproduced: features dir + extractor in, plismbench's metrics files out.

``iter_plismbench_evaluate(features_dir, extractor, metrics_dir)`` reads
``<features_dir>/<extractor>/<stain>_<scanner>_to_GMH_S60.tif/features.npy`` (``features_io.discover_plism``),
evaluates plismbench's tile subset (8,139 of PLISM's 16,278 tiles unless ``n_tiles`` says otherwise), every
pair once (resumed from ``pairs/`` when interrupted) and writes ``metrics.csv``, ``results.csv`` (read by
plismbench's ``utils/metrics.py``) and our ``summary.json`` / ``pairs.csv`` into
``<metrics_dir>/<n_tiles>_tiles/<extractor>/``.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from napari_pathdistill.errors import EvaluationError
from napari_pathdistill.evaluation.features_io import discover_plism, npy_rows
from napari_pathdistill.evaluation.manifest import SlideEntry
from napari_pathdistill.evaluation.plism import RobustnessResult, iter_robustness
from napari_pathdistill.evaluation.plismbench_files import (
    PairStore,
    tile_subset,
    write_metrics_csv,
    write_results_csv,
)
from napari_pathdistill.metrics.pairs import DEFAULT_KS
from napari_pathdistill.progress import Progress


@dataclass(frozen=True)
class PlismbenchOutput:
    """A finished plismbench-compatible run: the result and the folder holding its files."""

    result: RobustnessResult
    out_dir: Path
    n_tiles: int
    files: tuple[Path, ...] = ()
    note: str = ""


def _n_rows(entries: Sequence[SlideEntry]) -> int:
    path = entries[0].path
    assert path is not None
    return npy_rows(path)


def _plismbench_rows(result: RobustnessResult, entries: Sequence[SlideEntry]) -> list[dict]:
    """Our pair rows with plismbench's metrics.csv pair columns."""
    paths = {e.slide: str(e.path) for e in entries}
    return [
        {
            **r,
            "features_path_a": paths[r["slide_a"]],
            "features_path_b": paths[r["slide_b"]],
            "staining_a": r["stain_a"],
            "staining_b": r["stain_b"],
        }
        for r in result.rows
    ]


def iter_plismbench_evaluate(
    features_dir: str | Path,
    extractor: str,
    metrics_dir: str | Path,
    *,
    n_tiles: int | None = None,
    ks: Sequence[int] = DEFAULT_KS,
    device: str | torch.device | None = "auto",
    block: int = 2048,
    mixed_precision: bool = False,
    overwrite: bool = False,
    cancel: threading.Event | None = None,
) -> Iterator[Progress | PlismbenchOutput]:
    """Evaluate one extractor's PLISM features as ``plismbench evaluate`` does and write its files.

    Args:
        features_dir: plismbench's ``--features-dir`` (the extractor's slide folders are in
            ``<features_dir>/<extractor>/``).
        extractor: plismbench's ``--extractor`` (the folder name, also the metrics sub-folder).
        metrics_dir: plismbench's ``--metrics-dir``.
        n_tiles: tiles per slide (``plismbench_files.tile_subset``; None: 8,139 on PLISM features).
        ks: top-k values (plismbench's ``--top-k``; the leaderboard needs 10).
        device: torch device.
        block: queries per matmul.
        mixed_precision: plismbench's float16 computation instead of float32.
        overwrite: recompute every pair instead of resuming from ``pairs/``.
        cancel: optional event that stops the run.

    Yields:
        ``Progress`` items, then one ``PlismbenchOutput``.
    """
    entries = discover_plism(Path(features_dir) / extractor)
    n_rows = _n_rows(entries)
    subset = tile_subset(n_tiles, n_rows)
    n_used = n_rows if subset is None else len(subset)
    out_dir = Path(metrics_dir) / f"{n_used}_tiles" / extractor
    store = PairStore(out_dir, overwrite=overwrite)
    gen = iter_robustness(
        entries,
        ks,
        subset=subset,
        device=device,
        block=block,
        mixed_precision=mixed_precision,
        strict_coords=True,
        store=store,
        cancel=cancel,
    )
    result = None
    for item in gen:
        if isinstance(item, Progress):
            yield item
        else:
            result = item
    if not isinstance(result, RobustnessResult):
        raise EvaluationError("robustness evaluation ended without a result")
    metrics = ["cosine_similarity"] + [f"top_{k}_accuracy" for k in ks]
    files = [write_metrics_csv(out_dir / "metrics.csv", _plismbench_rows(result, entries), metrics)]
    files += result.save(out_dir)  # before results.csv: a cohort without one robustness type still gets these
    note = ""
    try:
        files.append(write_results_csv(out_dir / "results.csv", result.summary, metrics))
    except (
        EvaluationError
    ) as err:  # a partial cohort (one scanner, one staining): plismbench needs all 91 slides
        (out_dir / "results.csv").unlink(missing_ok=True)  # never leave an earlier run's results beside these
        note = f"results.csv not written: {err}"
    yield PlismbenchOutput(result, out_dir, n_used, tuple(files), note)
