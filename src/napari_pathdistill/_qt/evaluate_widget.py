"""Evaluate widget: launch robustness / linear-probe / teacher-vs-student runs, show table + plot, save reports.

The runs are ``evaluation.runs``; the table is the report's rows, the plot ``Report.plot`` on the dock's
canvas, and the saved files ``Report.save`` (``<name>.csv``, ``.json``, ``.png``).
"""

from __future__ import annotations

import threading
from collections.abc import Generator
from pathlib import Path
from typing import Any, cast

import napari
from magicgui.types import FileDialogMode
from magicgui.widgets import ComboBox, Container, FileEdit, PushButton
from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
from matplotlib.figure import Figure

from napari_pathdistill._qt._dock import scroll_when_docked
from napari_pathdistill._qt._evaluate_tasks import Finished, evaluation_task
from napari_pathdistill._qt._labels import status_label
from napari_pathdistill._qt._layers import mpp_override_box
from napari_pathdistill._qt._model_picker import ModelPicker, with_models
from napari_pathdistill._qt._workers import GeneratorFactory, TaskRunner
from napari_pathdistill._qt.report_table import ReportTable
from napari_pathdistill.errors import EvaluationError
from napari_pathdistill.evaluation.plismbench_files import PairStore
from napari_pathdistill.evaluation.report import Report
from napari_pathdistill.evaluation.runs import iter_linear_probe, iter_pair_robustness, iter_teacher_student

TASKS = {
    "robustness (slide pairs CSV)": "robustness",
    "linear probe (labelled tiles folder/CSV)": "probe",
    "teacher vs student (tiles folder)": "teacher_student",
}
#: what each task's input box takes, as the messages for a missing input name it
INPUTS = {
    "robustness": "a slide pairs CSV",
    "probe": "a labelled tiles folder or path,label CSV",
    "teacher_student": "a tiles folder",
}
#: what the plot area says while no report is shown (before a run, after a failed one): a blank white rectangle
#: under an empty table said nothing
EMPTY_PLOT = (
    "No results yet.\nChoose the inputs and press Run evaluation:\nthe table above and this plot fill in."
)


class EvaluateWidget(Container):
    """Dock widget: run one evaluation, stream progress, show the result table and a plot, save CSV/JSON/PNG.

    Args:
        viewer: the napari viewer (injected by npe2).
    """

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        self.viewer = viewer
        self.task = ComboBox(label="evaluation", choices=list(TASKS), value=next(iter(TASKS)))
        self.inputs = FileEdit(label="pairs CSV / tiles folder", mode=FileDialogMode.EXISTING_FILE)
        self.csv_button = PushButton(text="Select CSV", tooltip="choose a path,label CSV of labelled tiles")
        self.inputs.native.layout().addWidget(self.csv_button.native)  # beside the probe's folder picker
        self.csv_button.changed.connect(self.choose_csv)
        self.model = ModelPicker(label="model")
        self.teacher = ModelPicker(label="teacher", default="h-optimus-0", visible=False)
        self.teacher.device.label = "teacher device"
        self.out_dir = FileEdit(label="save reports to", mode=FileDialogMode.EXISTING_DIRECTORY)
        self.mpp_override = mpp_override_box("pair slides such as the BIRL JPEGs are tiled in um")
        self.run_button = PushButton(text="Run evaluation")
        self.cancel_button = PushButton(text="Cancel")
        self.status = status_label()
        self.summary = status_label()
        widgets = [self.task, self.inputs, self.teacher, self.model, self.mpp_override, self.out_dir, self.run_button,
                   self.cancel_button, self.status, self.summary]  # fmt: skip
        super().__init__(widgets=widgets, labels=True)
        scroll_when_docked(self)
        self.table = ReportTable()
        self.figure = Figure(figsize=(4, 3), tight_layout=True)
        self.canvas = FigureCanvasQTAgg(self.figure)
        self.canvas.setMinimumHeight(220)
        self.native.layout().addWidget(self.table)
        self.native.layout().addWidget(self.canvas)
        self._say_empty()
        self.runner = TaskRunner(self.run_button, self.cancel_button, self.status)
        self.run_button.changed.connect(self.run)
        self.task.changed.connect(self._on_task)
        self.report: Report | None = None
        self._partial: Report | None = None  # a cancelled robustness run's finished pairs
        self._store: PairStore | None = None  # the running robustness run's pairs/ folder
        self.saved: dict[str, Path] | None = None
        self._on_task(self.task.value)

    def _on_task(self, value: str) -> None:
        kind = TASKS[value]
        self.inputs.mode = (
            FileDialogMode.EXISTING_FILE if kind == "robustness" else FileDialogMode.EXISTING_DIRECTORY
        )
        self.csv_button.native.setVisible(kind == "probe")  # the folder dialog shows no files
        pair = kind == "teacher_student"
        self.teacher.visible = pair
        self.mpp_override.visible = kind == "robustness"
        # two model pickers: say which model each device row is for (both read "device" before)
        self.model.choice.label = "student" if pair else "model"
        self.model.device.label = "student device" if pair else "device"

    def choose_csv(self) -> None:
        """Pick the linear probe's ``path,label`` CSV (the "Select CSV" button): the folder dialog of "Choose
        directory" shows folders only, so a CSV could only be typed. The chosen file goes into the input box,
        and Run checks it as it checks a typed path."""
        from magicgui.application import use_app

        current = self.inputs.value
        start = None
        if isinstance(current, Path) and str(current).strip(". "):
            start = str((current if current.is_dir() else current.parent).expanduser().absolute())
        show = use_app().get_obj("show_file_dialog")
        chosen = show(
            FileDialogMode.EXISTING_FILE,
            caption="Select a path,label CSV of labelled tiles",
            start_path=start,
            filter="CSV (*.csv);;All files (*)",
        )
        if chosen:
            self.inputs.value = chosen

    def _factory(self) -> GeneratorFactory:
        kind = TASKS[self.task.value]
        src = self.inputs.value
        # an empty box is Path("."): it said "Input '.' does not exist" (the working folder, which does)
        if not isinstance(src, Path) or not str(src).strip(". "):
            raise EvaluationError(f"No input chosen: choose {INPUTS[kind]}.")
        out_dir = self._out_dir()
        student = self.model.request()
        teacher = self.teacher.request() if kind == "teacher_student" else None
        if kind == "robustness":
            fallback = float(self.mpp_override.value) or None

            def robustness(cancel: threading.Event) -> Generator[Any, None, Any]:
                store = self._store = self._pair_store()  # in the worker: it makes <out>/pairs/
                return (yield from with_models(cancel, [student], lambda model: iter_pair_robustness(
                    model, src, fallback_mpp=fallback, store=store, cancel=cancel)))  # fmt: skip

            return evaluation_task(src, INPUTS[kind], out_dir, robustness)
        if kind == "probe":
            return evaluation_task(src, INPUTS[kind], out_dir, lambda cancel: with_models(
                cancel, [student], lambda model: iter_linear_probe(model, src, cancel=cancel)))  # fmt: skip
        assert teacher is not None
        return evaluation_task(src, INPUTS[kind], out_dir, lambda cancel: with_models(
            cancel, [teacher, student], lambda t, s: iter_teacher_student(t, s, src, cancel=cancel)))  # fmt: skip

    def _out_dir(self) -> Path | None:
        """The 'save reports to' folder, None when none is chosen."""
        out_dir = self.out_dir.value
        return out_dir if isinstance(out_dir, Path) and str(out_dir).strip(". ") else None

    def _pair_store(self) -> PairStore | None:
        """``<save reports to>/pairs/``: each finished pair is kept there and a rerun of the same request resumes
        (as ``pathdistill eval robustness --out``); None without a folder."""
        out_dir = self._out_dir()
        if out_dir is None:
            return None
        try:
            return PairStore(out_dir)
        except OSError as exc:
            raise EvaluationError(
                f"Cannot write finished pairs to {out_dir / 'pairs'} ({exc.strerror or exc}): choose another "
                "'save reports to' folder."
            ) from exc

    def run(self) -> None:
        """Start the chosen evaluation (handler of the Run button)."""
        try:
            factory = self._factory()
        except Exception as exc:
            self.runner.say_error(exc, "Evaluation")
            return
        self.clear_results()
        robustness = TASKS[self.task.value] == "robustness"
        note = (
            "no report was saved (pairs finished before it are shown)"
            if robustness
            else "no report was saved"
        )
        self.runner.start(
            factory,
            self._finished,
            "Evaluation",
            on_item=self._on_item,
            cancel_note=note,
            on_end=self._on_end,
        )

    def _on_item(self, item: object) -> None:
        """Keep the report of a cancelled robustness run (the pairs it finished), yielded before it stops."""
        if isinstance(item, Report) and "cancelled" in item.params:
            self._partial = item

    def _on_end(self) -> None:
        """After a cancelled robustness run: show the pairs it finished and say how many, and where they are kept."""
        partial, self._partial = self._partial, None
        store, self._store = self._store, None
        if store is not None and store.dir.is_dir() and not any(store.dir.iterdir()):
            store.dir.rmdir()  # no pair finished (a failed or cancelled run): no empty pairs/ left behind
        if partial is None or not self.runner.cancel_event.is_set():
            return
        self.report = partial
        self._show(partial)
        done, total = cast("tuple[int, int]", partial.params["cancelled"])
        self.summary.value = f"CANCELLED after {done} of {total} pairs; " + self.summary.value
        out_dir = self._out_dir()
        kept = (
            f"finished pairs kept in {out_dir / 'pairs'}: Run again to resume"
            if out_dir is not None
            else "choose a 'save reports to' folder to keep finished pairs for a rerun"
        )
        self.status.value = f"Evaluation cancelled after {done} of {total} pairs; no report saved; {kept}"

    def clear_results(self) -> None:
        """Empty the table, the plot and the summary: a failed or cancelled run leaves no stale results."""
        self.report, self.saved, self._partial = None, None, None
        self.table.clear_rows()
        self._say_empty()
        self.summary.value = ""

    def _say_empty(self) -> None:
        """An empty plot that says what fills it (:data:`EMPTY_PLOT`)."""
        self.figure.clear()
        self.figure.text(0.5, 0.5, EMPTY_PLOT, ha="center", va="center", color="0.35", fontsize=9)
        self.canvas.draw_idle()

    def _finished(self, done: Finished) -> None:
        """The run's result (main thread): its report shown, with where the worker saved it."""
        self.show_result(done.report, done.saved)

    def show_result(self, report: Report, saved: dict[str, Path] | None = None) -> None:
        """Fill the table, draw the plot and say where the reports were saved (``saved``, written by the worker
        once the run succeeded), or that none were."""
        self.report, self.saved = report, saved
        self._show(report)
        out_dir = self._out_dir()
        if saved:
            names = ", ".join(p.name for p in saved.values())
            folder = next(iter(saved.values())).parent
            resumed = report.params.get("resumed")
            again = (
                f" ({resumed} of {len(report.rows)} pairs resumed from {folder / 'pairs'})" if resumed else ""
            )
            self.status.value = f"Evaluation: done; saved {names} in {folder}{again}"
        elif out_dir is None:
            self.status.value = "Evaluation: done; no report saved (choose a 'save reports to' folder)"
        else:
            self.status.value = "Evaluation: done; no report saved"

    def _show(self, report: Report) -> None:
        """The report's table, plot and summary line (with its notes and failed pairs)."""
        self._fill_table(report)
        self._plot(report)
        summary = "; ".join(_summary_item(k, v) for k, v in report.summary.items())
        notes = report.params.get("notes")
        if isinstance(notes, list) and notes:  # why a summary value is n/a (too few tiles for the metric)
            summary += "; NOTE: " + "; ".join(map(str, notes))
        failed = [r for r in report.rows if r.get("error") and not r.get("tiles")]
        if failed:  # the other pairs went on: name the ones that failed, and why
            summary += "; FAILED: " + "; ".join(
                f"{r['slide_a']} vs {r['slide_b']}: {r['error']}" for r in failed
            )
        self.summary.value = summary

    def _fill_table(self, report: Report) -> None:
        self.table.show_rows(report.rows)

    def _plot(self, report: Report) -> None:
        self.figure.clear()
        report.plot(self.figure)
        self.canvas.draw_idle()


def _summary_item(key: str, value: float) -> str:
    """``key value`` for the summary line: counts as integers, NaN (nothing meaningful to report) as n/a."""
    v = float(value)
    if v != v:
        return f"{key} n/a"
    if v.is_integer() and (abs(v) > 1 or key.endswith("pairs")):
        return f"{key} {int(v)}"
    return f"{key} {v:.3f}"
