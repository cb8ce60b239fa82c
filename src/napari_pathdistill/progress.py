"""Small typed progress messages yielded by every long-running core generator, and helpers to consume them.

Every long computation in the core is a generator that yields :class:`Progress` items and then its one
result (a dataclass). Callers that only want the result use :func:`drain`; generators that embed another
one re-yield its progress under their own stage name with ``result = yield from relabel(inner, "stage")``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Generator, Iterable
from dataclasses import dataclass
from typing import Any

from napari_pathdistill.errors import Cancelled


@dataclass(frozen=True)
class Progress:
    """Progress of a long computation.

    Attributes:
        done: units finished so far.
        total: total units (0 when unknown).
        stage: short human-readable name of the current stage, e.g. ``"embedding"``.
    """

    done: int
    total: int
    stage: str = ""

    @property
    def fraction(self) -> float:
        """Finished fraction in [0, 1] (0 when the total is unknown)."""
        return min(1.0, self.done / self.total) if self.total else 0.0


def raise_if_cancelled(cancel: threading.Event | None, message: str) -> None:
    """Raise :class:`~napari_pathdistill.errors.Cancelled` (``message``) once ``cancel`` is set.

    Called between a generator's steps, or given as ``functools.partial(raise_if_cancelled, cancel, message)``
    to a long core call that takes a ``check`` (a thumbnail read, the registration search).
    """
    if cancel is not None and cancel.is_set():
        raise Cancelled(message)


def drain(items: Iterable[Any], on_progress: Callable[[Progress], None] | None = None) -> Any:
    """Consume a core generator and return its last non-:class:`Progress` item (None when there is none).

    Args:
        items: a generator yielding ``Progress`` items and results.
        on_progress: called with each ``Progress`` (e.g. to move a tqdm bar).
    """
    result = None
    for item in items:
        if isinstance(item, Progress):
            if on_progress is not None:
                on_progress(item)
        else:
            result = item
    return result


def relabel(
    items: Iterable[Any], stage: str | None = None, *, cancel: threading.Event | None = None
) -> Generator[Progress, None, Any]:
    """Re-yield ``items``' progress (renamed ``stage`` when given) and return its last result.

    Use as ``result = yield from relabel(inner, "teacher")`` inside another core generator.

    Args:
        items: a generator yielding ``Progress`` items and results.
        stage: the stage name shown for the inner progress (None keeps the inner names).
        cancel: when set, :class:`~napari_pathdistill.errors.Cancelled` is raised before the next item.

    Raises:
        Cancelled: ``cancel`` was set.
    """
    result = None
    for item in items:
        if cancel is not None and cancel.is_set():
            raise Cancelled(f"{stage or 'work'} cancelled.")
        if isinstance(item, Progress):
            yield item if stage is None else Progress(item.done, item.total, stage)
        else:
            result = item
    return result
