"""The Evaluate dock's result table: a view over a report's rows, formatted only for the cells on screen.

A ``QTableWidget`` made one ``QTableWidgetItem`` per cell on the main thread: a teacher-vs-student report of
50,000 tiles froze napari for 2.5 s and held 111 MB more (100,000 tiles: twice that). The model here keeps a
reference to the report's rows and formats a cell when Qt paints it, so showing any report is immediate.
A header click sorts the view (:func:`sorted_order`: numbers by value, NaN and empty cells last), never the
report's rows; the row header keeps each row's number in the report (a pair's line in its CSV).
"""

from __future__ import annotations

import math
from numbers import Real
from typing import Any

from qtpy.QtCore import QAbstractTableModel, QModelIndex, QPersistentModelIndex, Qt
from qtpy.QtWidgets import QHeaderView, QTableView

from napari_pathdistill.evaluation.report import Cell

_Index = QModelIndex | QPersistentModelIndex
#: narrowest a long-text column is made when the columns do not fit the view (px): two long slide names left the
#: metrics off a 400 px dock
MAX_TEXT_COLUMN_PX = 100


def cell_text(value: Any) -> str:
    """A cell as the table shows it: floats at 4 decimals, anything else as ``str`` (a missing key: empty)."""
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def sorted_order(values: list[Any], descending: bool = False) -> list[int]:
    """Indices that sort a column's ``values``: numbers by value, then text (case-insensitive), then NaN and
    missing or empty cells (a failed pair's), which stay last in both orders. The sort is stable."""
    numbers: list[tuple[float, int]] = []
    texts: list[tuple[str, int]] = []
    last: list[int] = []
    for i, v in enumerate(values):
        if isinstance(v, Real) and not math.isnan(v):  # numpy scalars included
            numbers.append((float(v), i))
        elif isinstance(v, str) and v:
            texts.append((v.casefold(), i))
        else:
            last.append(i)
    numbers.sort(key=lambda t: t[0], reverse=descending)
    texts.sort(key=lambda t: t[0], reverse=descending)
    return [i for _, i in numbers] + [i for _, i in texts] + last


class ReportRowsModel(QAbstractTableModel):
    """Read-only table model of report rows (a list of dicts); columns in first-seen key order; sortable by a
    column (:meth:`sort`) without reordering the rows themselves."""

    def __init__(self) -> None:
        super().__init__()
        self._rows: list[dict[str, Cell]] = []
        self._keys: list[str] = []
        self._order: list[int] | None = None  # shown row -> report row, None: the report's order

    def set_rows(self, rows: list[dict[str, Cell]]) -> None:
        """Show ``rows`` (an empty list: an empty table, no columns)."""
        self.beginResetModel()
        self._rows, self._order = rows, None
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
        """A cell's text; its tooltip is the same text (whole where the column elides it)."""
        if role not in (Qt.ItemDataRole.DisplayRole, Qt.ItemDataRole.ToolTipRole) or not index.isValid():
            return None
        return cell_text(self._rows[self._row(index.row())].get(self._keys[index.column()], ""))

    def _row(self, shown: int) -> int:
        """The report row shown at ``shown``."""
        return shown if self._order is None else self._order[shown]

    def sort(self, column: int, order: Qt.SortOrder = Qt.SortOrder.AscendingOrder) -> None:
        """Show the rows sorted by ``column`` (:func:`sorted_order`); a column < 0: the report's order. The
        selection and current cell follow their rows (Qt's persistent indexes are moved with them)."""
        self.layoutAboutToBeChanged.emit()
        kept = self.persistentIndexList()
        rows = [self._row(i.row()) for i in kept]  # the report rows they are on
        if 0 <= column < len(self._keys):
            key = self._keys[column]
            values = [r.get(key) for r in self._rows]
            self._order = sorted_order(values, descending=order == Qt.SortOrder.DescendingOrder)
        else:
            self._order = None
        if kept:
            shown = list(range(len(self._rows))) if self._order is None else [0] * len(self._rows)
            for at, row in enumerate(self._order or ()):
                shown[row] = at
            moved = [self.index(shown[r], i.column()) for r, i in zip(rows, kept, strict=True)]
            self.changePersistentIndexList(kept, moved)
        self.layoutChanged.emit()

    def headerData(
        self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole
    ) -> Any:
        if role != Qt.ItemDataRole.DisplayRole:
            return None
        if orientation == Qt.Orientation.Horizontal:
            return self._keys[section] if section < len(self._keys) else None
        return str(self._row(section) + 1) if section < len(self._rows) else None


class ReportTable(QTableView):
    """The result table: :meth:`show_rows` / :meth:`clear_rows`; ``rowCount``, ``columnCount`` and
    :meth:`text` read what it shows."""

    def __init__(self) -> None:
        super().__init__()
        self.rows_model = ReportRowsModel()
        self.setModel(self.rows_model)
        self.verticalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Fixed)  # no per-row size pass
        self.horizontalHeader().setSortIndicator(-1, Qt.SortOrder.AscendingOrder)  # the report's order first
        self.setSortingEnabled(True)  # a header click sorts (ReportRowsModel.sort)
        self.setTextElideMode(Qt.TextElideMode.ElideMiddle)  # both ends of a slide name tell pairs apart
        self.setWordWrap(False)  # one elided line per cell: a wrapped name was cut at the row's height

    def show_rows(self, rows: list[dict[str, Cell]]) -> None:
        """Show a report's rows in its order (no column sorted); columns are sized to the header and the first
        rows' contents, then fitted to the view (:meth:`_fit_columns`)."""
        self.horizontalHeader().setSortIndicator(-1, Qt.SortOrder.AscendingOrder)
        self.rows_model.set_rows(rows)
        self.horizontalHeader().setResizeContentsPrecision(200)  # rows sampled to size a column
        self.resizeColumnsToContents()
        self._fit_columns()

    def _fit_columns(self) -> None:
        """When the columns are wider than the view, narrow the ones wider than both :data:`MAX_TEXT_COLUMN_PX`
        and their header (long names, not a metric) to that, plus an equal share of the room left; their text is
        elided, whole in the tooltip, and a column can be dragged wider."""
        header, n = self.horizontalHeader(), self.rows_model.columnCount()
        widths = [self.columnWidth(c) for c in range(n)]
        if sum(widths) <= self.viewport().width():
            return
        floors = [max(MAX_TEXT_COLUMN_PX, header.sectionSizeHint(c)) for c in range(n)]
        over = [c for c in range(n) if widths[c] > floors[c]]
        kept = sum(w for c, w in enumerate(widths) if c not in over)
        room = self.viewport().width() - kept - sum(floors[c] for c in over)
        share = max(0, room) // max(1, len(over))
        for c in over:
            self.setColumnWidth(c, min(widths[c], floors[c] + share))

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
