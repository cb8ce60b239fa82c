"""Warnings of a widget task's worker thread as napari notifications, each distinct one once.

superqt's worker routes every warning issued while it runs (``warnings.filterwarnings("always")``) to its
``warned`` signal, and napari's ``GeneratorWorker`` is meant to relay that signal to its notification manager,
but under PySide6 it never does: ``QRunnable.__init__`` does not chain to napari's notifying mixin, so the mixin
never connects. A task's warnings (tiles that could not be decoded and were skipped, a truncated slide file) were
lost in the GUI: the map had holes and nothing said why. :class:`WarningRelay` is connected by
:class:`~napari_pathdistill._qt._workers.TaskRunner` to each worker it starts.
"""

from __future__ import annotations

from typing import Any

#: distinct warnings shown per task; the next one says that more were left out
MAX_SHOWN = 5


class WarningRelay:
    """``warned`` slot of one task: ``relay(showwarning_args)`` on the main thread.

    Each distinct (category, message) is shown once, as napari shows warnings (its notification manager, which
    honours the user's notification settings); after :data:`MAX_SHOWN` of them, one note says that ``what``
    warned more and the rest are dropped (a slide with hundreds of corrupt tiles is not hundreds of pop-ups).
    """

    def __init__(self, what: str, max_shown: int = MAX_SHOWN) -> None:
        self.what, self.max_shown = what, max_shown
        self.seen: set[tuple[Any, str]] = set()

    def __call__(self, args: tuple) -> None:
        from napari.utils.notifications import notification_manager, show_warning

        key = (args[1] if len(args) > 1 else None, str(args[0]))
        if key in self.seen:
            return
        self.seen.add(key)
        if len(self.seen) <= self.max_shown:
            notification_manager.receive_warning(*args)
        elif len(self.seen) == self.max_shown + 1:
            show_warning(
                f"{self.what}: more warnings than the {self.max_shown} shown; the rest are not shown."
            )
