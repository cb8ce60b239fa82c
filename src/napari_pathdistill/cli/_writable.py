"""Where a command will write, checked before its work starts: one ``argument --x: ...`` line instead of an
``OSError`` traceback after the slide was read (``tiles``), napari was opened (``view --screenshot``) or the
model was loaded (``embed``). The check is ``atomic.folder_problem``, shared with the widgets (Evaluate checks its
"save reports to" folder before a run)."""

from __future__ import annotations

from napari_pathdistill.atomic import folder_problem

__all__ = ["folder_problem"]
