"""The Evaluate dock's result table on a report of 50,000 tiles (a teacher-vs-student run on a big tile set)."""

from __future__ import annotations

import numpy as np
import pytest
from qtpy.QtCore import QPoint, Qt

from napari_pathdistill._qt.evaluate_widget import EvaluateWidget
from napari_pathdistill._qt.report_table import MAX_TEXT_COLUMN_PX, ReportRowsModel, ReportTable
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


def test_a_header_click_sorts_numbers_by_value_with_failed_rows_last(qtbot):
    """The table could not be sorted (found driving the widget over slide pairs: the worst pair of a cohort had
    to be found by scrolling). A header click sorts by value: numbers as numbers (10 after 9), a failed pair's
    NaN and a missing cell last in both orders, text by text; the report and its saved files keep their order."""
    nan = float("nan")
    rows = [
        {"slide_a": "s2", "tiles": 9, "mean_cosine": 0.5, "error": ""},
        {"slide_a": "s10", "tiles": 0, "mean_cosine": nan, "error": "no um/px"},
        {"slide_a": "s1", "tiles": 10, "mean_cosine": 0.9, "error": ""},
        {"slide_a": "s3", "tiles": 120, "error": ""},  # no mean_cosine cell
        {"slide_a": "s4", "tiles": 40, "mean_cosine": 0.1, "error": ""},
    ]
    shown = list(rows)
    table = ReportTable()
    qtbot.addWidget(table)
    table.show_rows(shown)
    assert table.isSortingEnabled() and table.horizontalHeader().sortIndicatorSection() == -1

    def column(j: int) -> list[str]:
        return [table.text(i, j) for i in range(table.rowCount())]

    assert column(0) == ["s2", "s10", "s1", "s3", "s4"]  # as reported until a header is clicked
    table.show()
    header = table.horizontalHeader()

    def click(j: int) -> None:
        at = QPoint(header.sectionViewportPosition(j) + header.sectionSize(j) // 2, header.height() // 2)
        qtbot.mouseClick(header.viewport(), Qt.MouseButton.LeftButton, pos=at)

    click(2)  # mean_cosine
    first = header.sortIndicatorOrder()
    ascending = ["s4", "s2", "s1", "s10", "s3"]
    assert column(0) == (
        ascending if first == Qt.SortOrder.AscendingOrder else ["s1", "s2", "s4", "s10", "s3"]
    )
    click(2)
    assert header.sortIndicatorOrder() != first
    assert column(0) == (
        ["s1", "s2", "s4", "s10", "s3"] if first == Qt.SortOrder.AscendingOrder else ascending
    )
    assert column(2)[-2:] == ["nan", ""]  # failed and missing last either way
    table.sortByColumn(1, Qt.SortOrder.AscendingOrder)  # tiles: 0, 9, 10, 40, 120 (not "0", "10", "120", ...)
    assert column(1) == ["0", "9", "10", "40", "120"]
    table.sortByColumn(0, Qt.SortOrder.DescendingOrder)
    assert column(0) == ["s4", "s3", "s2", "s10", "s1"]
    assert table.text(0, 3) == "" and shown == rows  # the report's rows (saved as CSV) keep their order
    table.show_rows(rows[:2])  # a new report: shown in its own order
    assert column(0) == ["s2", "s10"] and header.sortIndicatorSection() == -1


def test_long_slide_names_leave_the_numbers_on_screen(qtbot):
    """A pair of TCGA-style file names sized both name columns to their full text: in the 400 px dock the
    mean cosine and top-k accuracy of every pair were off-screen to the right (found in a screenshot of a 40-pair
    report). Text columns are now capped and elided in the middle (both ends of a slide name tell pairs apart);
    the full text is the cell's tooltip, and a column can still be dragged wider."""
    name = "TCGA-AB-0001-01Z-00-DX1.A5B2C3D4-E5F6-7890-ABCD-EF1234567890"
    rows = [{"slide_a": f"{name}_scannerA.svs", "slide_b": f"{name}_scannerB.ndpi", "tiles": 1234,
             "mean_cosine": 0.8123, "topk_accuracy": 0.5}]  # fmt: skip
    table = ReportTable()
    qtbot.addWidget(table)
    table.resize(400, 300)
    table.show()
    table.show_rows(rows)
    assert table.textElideMode() == Qt.TextElideMode.ElideMiddle and not table.wordWrap()
    assert table.columnWidth(0) <= MAX_TEXT_COLUMN_PX and table.columnWidth(1) <= MAX_TEXT_COLUMN_PX
    model = table.model()
    tip = model.data(model.index(0, 0), Qt.ItemDataRole.ToolTipRole)
    assert tip == f"{name}_scannerA.svs"
    value = table.columnViewportPosition(3) + table.fontMetrics().horizontalAdvance("0.8123")  # mean_cosine
    assert 0 < value < table.viewport().width(), (value, table.viewport().width())
    assert table.columnWidth(2) < MAX_TEXT_COLUMN_PX  # short columns keep their content's width


def test_names_are_elided_only_when_the_columns_do_not_fit(qtbot):
    """The 100 px cap elided the teacher-vs-student table's tile names ('almost…-1.png') with a third of the dock
    empty beside them (found in the screenshot after the cap), and cut metric headers such as 'topk_accuracy'.
    Columns now keep their whole width when they fit, share the room left when they do not, and a column is never
    made narrower than its header."""
    rows = [
        {"tile": f"high-nuclei-score-tile-{i}.png", "label": "tissue", "knn5_overlap": 0.2} for i in range(3)
    ]
    table = ReportTable()
    qtbot.addWidget(table)
    table.resize(400, 300)
    table.show()
    table.show_rows(rows)
    assert table.columnWidth(0) > table.fontMetrics().horizontalAdvance(rows[0]["tile"])  # whole, not elided
    wide = [{"slide_a": "S" * 80, "slide_b": "T" * 80, "tiles": 1, "topk_accuracy": 0.5, "registration": "x"}]
    table.show_rows(wide)
    header = table.horizontalHeader()
    assert table.columnWidth(0) <= MAX_TEXT_COLUMN_PX
    assert all(table.columnWidth(c) >= header.sectionSizeHint(c) for c in (2, 3, 4))


def test_the_selected_row_stays_selected_when_a_column_is_sorted(qtbot):
    """The sort moved the rows under the selection: the pair selected (its row highlighted) before a header click
    was another pair after it, as the model did not move its persistent indexes (found reviewing the sort)."""
    rows = [{"slide_a": f"s{i}", "mean_cosine": c} for i, c in enumerate([0.5, 0.9, 0.1, 0.7])]
    table = ReportTable()
    qtbot.addWidget(table)
    table.show_rows(rows)
    table.selectRow(1)  # s1, cosine 0.9
    table.sortByColumn(1, Qt.SortOrder.AscendingOrder)  # s2, s0, s3, s1
    selected = [i.row() for i in table.selectionModel().selectedRows()]
    assert selected == [3] and table.text(3, 0) == "s1"
    assert table.currentIndex().row() == 3
    table.sortByColumn(-1, Qt.SortOrder.AscendingOrder)  # the report's order again
    assert [i.row() for i in table.selectionModel().selectedRows()] == [1]
