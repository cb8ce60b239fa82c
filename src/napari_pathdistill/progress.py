"""Small typed progress messages yielded by every long-running core generator, and helpers to consume them.

Every long computation in the core is a generator that yields :class:`Progress` items and then its one
result (a dataclass). Callers that only want the result use :func:`drain`; generators that embed another
one re-yield its progress under their own stage name with ``result = yield from relabel(inner, "stage")``.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable, Generator, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

from napari_pathdistill.errors import Cancelled

T = TypeVar("T")


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


#: the cancellation of the long numerical work running in this thread (:func:`cancel_scope`)
_SCOPE = threading.local()


@contextlib.contextmanager
def cancel_scope(cancel: threading.Event | None, message: str) -> Iterator[None]:
    """Within it, in this thread, :func:`checkpoint` raises :class:`~napari_pathdistill.errors.Cancelled`
    (``message``) once ``cancel`` is set.

    For long numerical calls that take no ``check`` (a 100k-row read, PCA, k-means: seconds each), so that a
    worker stops within one of their steps instead of at the end of the call. Scopes nest (the inner one rules
    until it exits); outside any, :func:`checkpoint` does nothing.
    """
    outer = getattr(_SCOPE, "current", None)
    _SCOPE.current = (cancel, message)
    try:
        yield
    finally:
        _SCOPE.current = outer


def shielded() -> contextlib.AbstractContextManager[None]:
    """A block that runs to its end in a cancelled scope (its checkpoints do nothing): work whose result must
    reach the caller even when cancelled, e.g. painting the tiles already embedded."""
    return cancel_scope(None, "")


def checkpoint() -> None:
    """A cancellation point of a long loop: raises ``Cancelled`` when this thread's :func:`cancel_scope` is
    cancelled; else nothing (a thread-local lookup)."""
    scope = getattr(_SCOPE, "current", None)
    if scope is not None:
        raise_if_cancelled(*scope)


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


_END = object()


def reported(
    call: Callable[[Callable[[float], None]], T], stage: str, total: int = 100
) -> Generator[Progress, None, T]:
    """Run a blocking ``call(report)`` that reports its finished fraction (0..1) and yield it as Progress.

    For long work that reports from inside code that cannot yield (a scipy optimiser's evaluations, a thumbnail's
    block reads): ``call`` runs on a helper thread while this generator yields ``Progress(n, total, stage)``
    each time ``n = int(fraction * total)`` goes up (never down; ``Progress(0, total)`` first, ``total`` last),
    then returns ``call``'s result or raises its exception (``Cancelled`` from its own checks included). Closed
    early (the consumer stops), it makes ``call``'s next ``report`` raise :class:`Cancelled` and waits for it.
    Use as ``result = yield from reported(lambda report: work(progress=report), "registration")``.
    """
    yield Progress(0, total, stage)
    items: queue.SimpleQueue[Any] = queue.SimpleQueue()
    abandoned = threading.Event()
    out: dict[str, Any] = {}

    def report(fraction: float) -> None:
        if abandoned.is_set():
            raise Cancelled(f"{stage} abandoned.")
        items.put(fraction)

    def run() -> None:
        try:
            out["result"] = call(report)
        except BaseException as exc:  # handed to the consumer's thread
            out["error"] = exc
        finally:
            items.put(_END)

    worker = threading.Thread(target=run, name=f"pathdistill {stage}", daemon=True)
    worker.start()
    done = 0
    try:
        while (item := items.get()) is not _END:
            if (n := min(total, int(item * total))) > done:
                done = n
                yield Progress(done, total, stage)
    finally:
        abandoned.set()
        worker.join()
    if "error" in out:
        raise out["error"]
    if done < total:
        yield Progress(total, total, stage)
    return out["result"]
