"""Status and message labels that wrap and elide, so no message can resize the window.

magicgui's ``Label`` is a QLabel with a *fixed* size policy: one long error (a path, a hub URL, a traceback
line) sets the dock's minimum width, which napari honours by stretching the whole window. :class:`StatusLabel`
ignores its text's width (the layout decides it), wraps at spaces and at the break points inserted into long
unbroken runs, elides past :data:`MAX_CHARS` and keeps the full text in its tooltip and in ``value``.
"""

from __future__ import annotations

import re
from typing import Any

from magicgui.widgets import Label
from qtpy.QtCore import QEvent, QObject, Qt
from qtpy.QtWidgets import QLabel, QSizePolicy

#: characters shown at most by default; the rest is elided (the full text stays in the tooltip and ``value``)
MAX_CHARS = 400
#: for labels that show a result's explanation (several sentences of numbers), not a status or an error
RESULT_CHARS = 1200
#: a run of non-space characters longer than this gets invisible break points
MAX_RUN = 24
_ZWSP = "\u200b"


def _breakable(run: str) -> str:
    """A long unbroken run with zero-width spaces after separators and at least every ``MAX_RUN`` chars."""
    out, since = [], 0
    for ch in run:
        out.append(ch)
        since += 1
        if ch in "/\\_.-:=,;&?" or since >= MAX_RUN:
            out.append(_ZWSP)
            since = 0
    return "".join(out)


def display_text(text: str, max_chars: int = MAX_CHARS) -> str:
    """What a :class:`StatusLabel` shows for ``text``: elided to ``max_chars``, long runs made breakable."""
    text = " ".join(text.split())  # newlines and tabs of tracebacks: one paragraph
    if len(text) > max_chars:
        text = text[: max_chars - 1].rstrip() + "\u2026"
    return re.sub(rf"\S{{{MAX_RUN + 1},}}", lambda m: _breakable(m.group(0)), text)


def fit_height(label: QLabel) -> None:
    """Hold a word-wrapped label at least as tall as its text needs at its current width.

    Qt's layouts do not pass a wrapped label's height-for-width up through nested forms reliably: the tile
    search's summary (a form inside the Embed form, inside a dock's scroll area) wrapped to two lines after a
    tile click and kept the height of one, its second line hidden under the next row.
    """
    if not (label.text() and label.isVisible()):  # a hidden label's width is no layout's yet: fitted on show
        need = 0
    else:
        need = max(label.heightForWidth(label.width()), 0)  # QLabel's answer is at least its minimum height
        if need <= label.minimumHeight() and need > 1.5 * label.fontMetrics().lineSpacing():
            label.setMinimumHeight(0)  # it held several lines: its text may need fewer now (a relayout)
            need = max(label.heightForWidth(label.width()), 0)
    if need != label.minimumHeight():
        label.setMinimumHeight(need)


class _FitOnResize(QObject):
    """Event filter: a label shown, or its width changed (the dock resized): the lines it wraps to may have."""

    def eventFilter(self, obj: QObject, event: QEvent) -> bool:  # Qt override
        if event.type() in (QEvent.Type.Resize, QEvent.Type.Show) and isinstance(obj, QLabel):
            fit_height(obj)
        return False


class StatusLabel(Label):
    """A magicgui ``Label`` for status and error messages: wraps, elides, never widens its dock, and is as
    tall as the lines it wraps to (:func:`fit_height`).

    ``value`` is the full text as set; the label shows :func:`display_text` of it, elided past ``max_chars``.
    """

    def __init__(self, value: str = "", max_chars: int = MAX_CHARS, **kwargs: Any) -> None:
        self._full, self.max_chars = "", max_chars
        super().__init__(value=value, **kwargs)
        q = self.native
        q.setWordWrap(True)
        q.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Minimum)
        q.setMinimumWidth(0)
        q.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        q.installEventFilter(_FitOnResize(q))  # parented to the label: lives and dies with it

    def get_value(self) -> str:
        """The full text last set (the display may be elided)."""
        return self._full

    def set_value(self, value: Any) -> None:
        """Show ``value`` wrapped/elided; the full text goes to the tooltip when it does not fit."""
        self._full = "" if value is None else str(value)
        shown = display_text(self._full, self.max_chars)
        self.native.setText(shown)
        self.native.setToolTip(self._full if len(self._full) > self.max_chars else "")
        fit_height(self.native)


def status_label(value: str = "", max_chars: int = MAX_CHARS, **kwargs: Any) -> StatusLabel:
    """A :class:`StatusLabel` (the one constructor every widget uses for status, summary and error lines);
    ``max_chars``: :data:`RESULT_CHARS` for a label that explains a result."""
    return StatusLabel(value=value, max_chars=max_chars, **kwargs)
