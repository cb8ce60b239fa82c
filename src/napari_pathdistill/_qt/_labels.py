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
from qtpy.QtCore import Qt
from qtpy.QtWidgets import QSizePolicy

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


class StatusLabel(Label):
    """A magicgui ``Label`` for status and error messages: wraps, elides, never widens its dock.

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

    def get_value(self) -> str:
        """The full text last set (the display may be elided)."""
        return self._full

    def set_value(self, value: Any) -> None:
        """Show ``value`` wrapped/elided; the full text goes to the tooltip when it does not fit."""
        self._full = "" if value is None else str(value)
        shown = display_text(self._full, self.max_chars)
        self.native.setText(shown)
        self.native.setToolTip(self._full if len(self._full) > self.max_chars else "")


def status_label(value: str = "", max_chars: int = MAX_CHARS, **kwargs: Any) -> StatusLabel:
    """A :class:`StatusLabel` (the one constructor every widget uses for status, summary and error lines);
    ``max_chars``: :data:`RESULT_CHARS` for a label that explains a result."""
    return StatusLabel(value=value, max_chars=max_chars, **kwargs)
