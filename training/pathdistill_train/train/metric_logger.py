"""Training metrics: the run's ``metrics.csv`` (and TensorBoard) on rank 0, kept consistent across resumes, and
the progress line's time format (as dinov2's ``logging.helpers.MetricLogger``)."""

from __future__ import annotations

import csv
from pathlib import Path

from napari_pathdistill.atomic import atomic_path

LOG_KEYS = (
    "step",
    "loss",
    "dino",
    "ibot",
    "feat_cls",
    "feat_patch",
    "feat_spread",
    "relational",
    "cka",
    "lr",
    "wd",
    "momentum",
    "teacher_temp",
    "grad_norm",
    "images_per_s",
    "data_wait_frac",
    "elapsed_s",
)


class MetricLogger:
    """CSV (always) and TensorBoard (when installed) logging on rank 0."""

    def __init__(self, out_dir: Path, enabled: bool, tensorboard: bool) -> None:
        self.enabled, self.tb = enabled, None
        if not enabled:
            return
        self.path = out_dir / "metrics.csv"
        self._new = not self.path.exists()
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(out_dir / "tensorboard"))
            except ImportError:
                self.tb = None

    def log(self, row: dict[str, float]) -> None:
        if not self.enabled:
            return
        with self.path.open("a", newline="") as f:
            w = csv.DictWriter(f, fieldnames=LOG_KEYS, extrasaction="ignore")
            if self._new:
                w.writeheader()
                self._new = False
            w.writerow(row)
        if self.tb is not None:
            for k, v in row.items():
                if k != "step":
                    self.tb.add_scalar(k, v, int(row["step"]))


def truncate_csv(path: Path, step: int) -> None:
    """Atomically rewrite ``path`` keeping the rows of steps before ``step`` (the checkpoint's next step).

    A killed run logged steps beyond its last checkpoint; the resumed run redoes them, so they are dropped here
    (as is a row cut short by the kill).
    """
    if not path.exists():
        return
    with path.open(newline="") as f:
        rows = [r for r in csv.DictReader(f) if _complete_row(r) and int(r["step"]) < step]
    with atomic_path(path) as tmp, tmp.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=LOG_KEYS, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)


def _complete_row(row: dict[str, str | None]) -> bool:
    """Whether a CSV row has every column of its file's header (some may be empty; a file written before a
    column was added lacks it) and an integer step; a kill mid-write leaves a partial last row."""
    return None not in row and all(v is not None for v in row.values()) and (row.get("step") or "").isdigit()


def elapsed_before(path: Path) -> float:
    """``elapsed_s`` of the last row of a resumed run's (truncated) metrics.csv; 0 without one."""
    if not path.exists():
        return 0.0
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    try:
        return float(rows[-1]["elapsed_s"]) if rows else 0.0
    except (KeyError, TypeError, ValueError):  # a file from before the column
        return 0.0


def format_duration(seconds: float) -> str:
    """``3725.2`` -> ``"1:02:05"``; under an hour ``"2:05"``."""
    s = max(0, round(seconds))
    h, rest = divmod(s, 3600)
    m, sec = divmod(rest, 60)
    return f"{h}:{m:02d}:{sec:02d}" if h else f"{m}:{sec:02d}"
