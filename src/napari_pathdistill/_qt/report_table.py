"""The Evaluate dock's result table: a view over a report's rows, formatted only for the cells on screen.

A ``QTableWidget`` made one ``QTableWidgetItem`` per cell on the main thread: a teacher-vs-student report of
50,000 tiles froze napari for 2.5 s and held 111 MB more (100,000 tiles: twice that). The model here keeps a
reference to the report's rows and formats a cell when Qt paints it, so showing any report is immediate.
"""

from __future__ import annotations

from typing import Any

from qtpy.QtCore import QAbstractTableModel, QModelIndex, QPersistentModelIndex, Qt
from qtpy.QtWidgets import QHeaderView, QTableView

from napari_pathdistill.evaluation.report import Cell

_Index = QModelIndex | QPersistentModelIndex


def cell_text(value: Any) -> str:
    """A cell as the table shows it: floats at 4 decimals, anything else as ``str`` (a missing key: empty)."""
    return f"{value:.4f}" if isinstance(value, float) else str(value)


class ReportRowsModel(QAbstractTableModel):
    """Read-only table model of report rows (a list of dicts); columns in first-seen key order."""

    def __init__(self) -> None:
        super().__init__()
        self._rows: list[dict[str, Cell]] = []
        self._keys: list[str] = []

    def set_rows(self, rows: list[dict[str, Cell]]) -> None:
        """Show ``rows`` (an empty list: an empty table, no columns)."""
        self.beginResetModel()
        self._rows = rows
        self._keys = list(
            dict.fromkeys(k for r in rows[:1000] for k in r)
        )  # a report's rows share their keys
        for row in rows[1000:]:
            self._keys.extend(k for k in row if k not in self._keys)
        self.endResetModel()

    def rowCount(self, parent: _Index = QModelIndex()) -> int:  # noqa: B008 (Qt's default)
        return 0 if parent.isValid() else len(self._rows)

    def columnCount(self, parent: _Index = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(self._keys)

    def data(self, index: _Index, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if role != Qt.ItemDataRole.DisplayRole or not index.isValid():
            return None
        return cell_text(self._rows[index.row()].get(self._keys[index.column()], ""))

    def headerData(
        self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole
    ) -> Any:
        if role != Qt.ItemDataRole.DisplayRole:
            return None
        if orientation == Qt.Orientation.Horizontal:
            return self._keys[section] if section < len(self._keys) else None
        return str(section + 1)


class ReportTable(QTableView):
    """The result table: :meth:`show_rows` / :meth:`clear_rows`; ``rowCount``, ``columnCount`` and
    :meth:`text` read what it shows."""

    def __init__(self) -> None:
        super().__init__()
        self.rows_model = ReportRowsModel()
        self.setModel(self.rows_model)
        self.verticalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Fixed)  # no per-row size pass

    def show_rows(self, rows: list[dict[str, Cell]]) -> None:
        """Show a report's rows; columns are sized to the header and the first rows' contents."""
        self.rows_model.set_rows(rows)
        self.horizontalHeader().setResizeContentsPrecision(200)  # rows sampled to size a column
        self.resizeColumnsToContents()

    def clear_rows(self) -> None:
        """An empty table (no rows, no columns)."""
        self.rows_model.set_rows([])

    def rowCount(self) -> int:
        return self.rows_model.rowCount()

    def columnCount(self) -> int:
        return self.rows_model.columnCount()

    def text(self, row: int, column: int) -> str:
        """The text shown in a cell."""
        return str(self.rows_model.data(self.rows_model.index(row, column)))
