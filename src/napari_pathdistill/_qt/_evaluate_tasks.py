"""What the Evaluate dock runs in its worker thread around an evaluation: the input and 'save reports to' checks
before it, saving the reports after it.

All of it touches the file system, which on a slow or hung network mount froze the whole napari window while it
ran in the Run button's handler (the checks) or in the result handler (``Report.save`` writes a CSV, a JSON and
renders a PNG).
"""

from __future__ import annotations

import threading
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from napari_pathdistill._qt._workers import GeneratorFactory
from napari_pathdistill.atomic import folder_problem
from napari_pathdistill.errors import EvaluationError
from napari_pathdistill.evaluation.report import Report
from napari_pathdistill.progress import Progress


@dataclass(frozen=True)
class Finished:
    """An evaluation's report and the files it was saved to (None: no 'save reports to' folder was chosen)."""

    report: Report
    saved: dict[str, Path] | None


def evaluation_task(src: Path, what: str, out_dir: Path | None, run: GeneratorFactory) -> GeneratorFactory:
    """``run`` (yielding progress, returning a :class:`Report`) between the checks and the saving, all in the
    worker; its result is a :class:`Finished`.

    Args:
        src: the input (pairs CSV, tiles folder or CSV): refused when it does not exist.
        what: what the task's input box takes, for that message ("a slide pairs CSV").
        out_dir: the 'save reports to' folder (None: nothing is saved); refused when it cannot be written.
        run: the evaluation itself.
    """

    def task(cancel: threading.Event) -> Generator[Any, None, Finished]:
        if not src.exists():
            raise EvaluationError(f"Input '{src}' does not exist: choose {what}.")
        yield from _check_folder(out_dir)
        report = yield from _report_of(run(cancel))
        # no folder, or cancelled at the last moment (the runner then says nothing was saved)
        if out_dir is None or cancel.is_set():
            return Finished(report, None)
        yield Progress(0, 0, f"saving reports in {out_dir}")
        return Finished(report, report.save(out_dir))

    return task


def _report_of(items: Iterator[Any]) -> Generator[Any, None, Report]:
    """Pass on the run's items; return its report (its last :class:`Report` item, or its return value).

    Raises:
        EvaluationError: the run ended without a report.
    """
    report = None
    try:
        while True:
            try:
                item = next(items)
            except StopIteration as stop:
                report = stop.value if isinstance(stop.value, Report) else report
                break
            if isinstance(item, Report):
                report = item
            yield item
    finally:
        close = getattr(items, "close", None)
        if close is not None:  # the worker's generator closed (Cancel, window closed): close the run's
            close()
    if report is None:
        raise EvaluationError("The evaluation produced no report.")
    return report


def _check_folder(out_dir: Path | None) -> Generator[Progress, None, None]:
    """Refuse an unwritable 'save reports to' folder before the run (its reports are saved only once every tile /
    pair is done); the check writes a probe file (``atomic.folder_problem``).

    Raises:
        EvaluationError: the folder cannot be written (the message names it and why).
    """
    if out_dir is None:
        return
    yield Progress(0, 0, f"checking {out_dir}")
    problem = folder_problem(out_dir)
    if problem:
        raise EvaluationError(f"'save reports to': {problem}")
