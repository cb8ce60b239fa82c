"""Small typed progress messages yielded by every long-running core generator, and helpers to consume them.

Every long computation in the core is a generator that yields :class:`Progress` items and then its one
result (a dataclass). Callers that only want the result use :func:`drain`; generators that embed another
one re-yield its progress under their own stage name with ``result = yield from relabel(inner, "stage")``.
"""

from __future__ import annotations

import contextlib
import queue
import sys
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


#: the cancellations of the long numerical work running in this thread (:func:`cancel_scope`): (event, message)s
_SCOPE = threading.local()


@contextlib.contextmanager
def cancel_scope(cancel: threading.Event | None, message: str, *, inherit: bool = False) -> Iterator[None]:
    """Within it, in this thread, :func:`checkpoint` raises :class:`~napari_pathdistill.errors.Cancelled`
    (``message``) once ``cancel`` is set.

    For long numerical calls that take no ``check`` (a 100k-row read, PCA, k-means: seconds each), so that a
    worker stops within one of their steps instead of at the end of the call. Scopes nest: the inner one rules
    until it exits, or with ``inherit`` applies besides the outer ones. Outside any, :func:`checkpoint` does
    nothing.
    """
    outer: tuple[tuple[threading.Event | None, str], ...] = getattr(_SCOPE, "current", ())
    _SCOPE.current = (*(outer if inherit else ()), (cancel, message))
    try:
        yield
    finally:
        _SCOPE.current = outer


def shielded() -> contextlib.AbstractContextManager[None]:
    """A block that runs to its end in a cancelled scope (its checkpoints do nothing): work whose result must
    reach the caller even when cancelled, e.g. painting the tiles already embedded."""
    return cancel_scope(None, "")


def checkpoint() -> None:
    """A cancellation point of a long loop: raises ``Cancelled`` when one of this thread's :func:`cancel_scope`
    events is set; else nothing (a thread-local lookup)."""
    for scope in getattr(_SCOPE, "current", ()):
        raise_if_cancelled(*scope)


@contextlib.contextmanager
def interruptible() -> Iterator[None]:
    """Within it, every Python function call in this thread is a :func:`checkpoint`.

    For a library call that takes no callback and runs for minutes, e.g. scikit-learn's ``LogisticRegression``
    fit (L-BFGS on 80,000 x 1,536 features: each loss evaluation, ~0.3 s, goes through Python calls): Cancel
    stops it at its next Python call instead of at the end of the fit. It is a ``sys.settrace`` hook of this
    thread for the block that only reads the scope's events, so the numbers are those of the plain call.
    While it is active a debugger's or coverage's trace function of this thread is suspended (restored at the
    end). Outside any cancel scope it does nothing. A ``Cancelled`` that the library catches and swallows ends
    the hook (Python drops a trace function that raised): the caller's next :func:`checkpoint` stops the work.
    """
    if not any(cancel is not None for cancel, _ in getattr(_SCOPE, "current", ())):
        yield
        return

    def trace(frame: object, event: str, arg: object) -> None:
        if event == "call":
            checkpoint()

    before = sys.gettrace()
    sys.settrace(trace)  # type: ignore[arg-type]
    try:
        yield
    finally:
        sys.settrace(before)


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
    ``call`` runs in the consumer thread's :func:`cancel_scope` and in one that closing sets, so its
    :func:`checkpoint` calls (between two reports, or in an :func:`interruptible` library call) stop it too: a
    call that reports once a fold or a block no longer holds a Cancel for a whole one.
    Use as ``result = yield from reported(lambda report: work(progress=report), "registration")``.
    """
    yield Progress(0, total, stage)
    items: queue.SimpleQueue[Any] = queue.SimpleQueue()
    abandoned = threading.Event()
    out: dict[str, Any] = {}
    scopes = getattr(_SCOPE, "current", ())  # the consumer thread's, taken into the helper thread

    def report(fraction: float) -> None:
        if abandoned.is_set():
            raise Cancelled(f"{stage} abandoned.")
        items.put(fraction)

    def run() -> None:
        _SCOPE.current = scopes
        try:
            with cancel_scope(abandoned, f"{stage} abandoned.", inherit=True):
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
