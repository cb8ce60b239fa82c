"""``<out>/embed_summary.csv``: what ``pathdistill embed`` did with each slide it was given for this folder.

One row per slide (its absolute path): ``status`` ``embedded``, ``kept`` (a complete output of the same embedding
was there) or ``failed``, the ``tiles`` of its output, its ``outputs`` (space-separated), the ``error`` of a failed
slide, its ``warnings`` (`` | ``-separated: no MPP, undecodable tiles) and when it ``finished`` (UTC). A rerun
updates the rows of its slides in place and keeps the others', so a cohort embedded in several runs (resumed
after Ctrl-C, failed slides retried) has one row per slide, its latest outcome; each write merges this run's
rows into the file as it is then, so two runs writing into one folder at once (the per-slide locks let them)
keep each other's rows. The file is written atomically,
at most every :data:`WRITE_EVERY_S` seconds while slides finish and once more at the end (also when interrupted).
"""

from __future__ import annotations

import csv
import io
import os
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from napari_pathdistill.atomic import atomic_write_text

SUMMARY_NAME = "embed_summary.csv"
COLUMNS = ("slide", "status", "tiles", "outputs", "error", "warnings", "finished")
#: seconds between two writes of the summary while slides finish (10k slides: not one rewrite per slide)
WRITE_EVERY_S = 10.0


def read_summary(path: Path) -> dict[str, dict[str, str]]:
    """The rows of an existing summary by slide; {} when there is none or it is not one (it is then replaced)."""
    try:
        with path.open(encoding="utf-8", newline="") as fh:
            reader = csv.DictReader(fh)
            if tuple(reader.fieldnames or ()) != COLUMNS:
                return {}
            return {row["slide"]: row for row in reader if row.get("slide")}
    except (OSError, UnicodeDecodeError, csv.Error):
        return {}


class EmbedSummary:
    """The summary of ``out_dir``, updated with each slide's outcome.

    Args:
        out_dir: the ``--out`` folder.
        create: make ``out_dir`` when missing (False with ``--scheduler``: the workers' folder may not be here).
    """

    def __init__(self, out_dir: str | Path, *, create: bool = True) -> None:
        self.path = Path(out_dir).expanduser() / SUMMARY_NAME
        self.create = create
        self.rows: dict[str, dict[str, str]] = {}  # this run's outcomes, by slide
        self._dirty, self._written_at, self._failed = False, time.monotonic(), False

    def add(self, outcome: Any) -> None:
        """Record a :class:`~napari_pathdistill.inference.cohort_slide.SlideOutcome` (replacing the slide's row)."""
        slide = os.path.abspath(os.path.expanduser(outcome.slide))
        status = "failed" if not outcome.ok else "kept" if outcome.skipped else "embedded"
        self.rows[slide] = {
            "slide": slide,
            "status": status,
            "tiles": "" if outcome.tiles is None else str(outcome.tiles),
            "outputs": " ".join(outcome.outputs),
            "error": (outcome.error or "").replace("\n", " "),
            "warnings": " | ".join(outcome.warnings),
            "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        self._dirty = True
        if time.monotonic() - self._written_at >= WRITE_EVERY_S:
            self.write()

    def write(self) -> Path | None:
        """Write the rows (if any changed); the path, or None when it cannot be written (said once on stderr)."""
        if not self._dirty:
            return self.path if self.path.is_file() else None
        self._written_at = time.monotonic()
        if not self.create and not self.path.parent.is_dir():
            return None
        text = io.StringIO()
        writer = csv.DictWriter(text, COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows({**read_summary(self.path), **self.rows}.values())
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(self.path, text.getvalue())
        except OSError as exc:
            if not self._failed:
                self._failed = True
                print(f"warning: cannot write {self.path}: {exc.strerror or exc}", file=sys.stderr)
            return None
        self._dirty = False
        return self.path
