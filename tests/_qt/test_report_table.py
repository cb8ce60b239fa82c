"""The Evaluate dock's result table on a report of 50,000 tiles (a teacher-vs-student run on a big tile set)."""

from __future__ import annotations

import numpy as np
import pytest
from qtpy.QtCore import Qt

from napari_pathdistill._qt.evaluate_widget import EvaluateWidget
from napari_pathdistill._qt.report_table import ReportRowsModel
from napari_pathdistill.evaluation.report import Report

pytestmark = pytest.mark.napari


def test_a_50k_row_report_formats_only_the_cells_on_screen(make_napari_viewer, qtbot, monkeypatch):
    """A QTableWidget item per cell: 150,000 items made on the main thread (2.5 s frozen, +111 MB measured by
    benchmarks/evaluate_table.py). The table now formats the cells Qt paints."""
    formatted: list[int] = []
    real_data = ReportRowsModel.data
    monkeypatch.setattr(
        ReportRowsModel, "data", lambda self, i, r=0: formatted.append(1) or real_data(self, i, r)
    )
    n = 50_000
    values = np.random.default_rng(0).random(n)
    rows = [
        {"tile": f"t{i:05d}.png", "label": "tissue", "knn5_overlap": float(v)} for i, v in enumerate(values)
    ]
    rows[3] = {"tile": "t00003.png", "knn5_overlap": 0.5}  # a row without a key shows an empty cell
    report = Report(
        "teacher_student", rows, {"linear_cka": 0.5, "tiles": float(n)}, {"teacher": "t", "student": "s"}
    )
    widget = EvaluateWidget(make_napari_viewer())
    widget.show_result(report)
    widget.native.show()
    qtbot.wait(50)
    assert widget.table.rowCount() == n and widget.table.columnCount() == 3
    assert [widget.table.model().headerData(j, Qt.Orientation.Horizontal) for j in range(3)] == [
        "tile",
        "label",
        "knn5_overlap",
    ]
    assert widget.table.text(n - 1, 2) == f"{values[-1]:.4f}" and widget.table.text(n - 1, 0) == "t49999.png"
    assert widget.table.text(3, 1) == "" and widget.table.text(3, 2) == "0.5000"
    assert 0 < len(formatted) < 20_000  # the painted and column-sized cells, not 150,000
    widget.clear_results()
    assert widget.table.rowCount() == 0 and widget.table.columnCount() == 0
