"""Shared widget machinery: run one core generator in a napari thread worker with progress and Cancel.

Core generators (pure, no Qt) yield :class:`~napari_pathdistill.progress.Progress` objects while they
work and yield (or return) one result object at the end. :class:`TaskRunner` runs such a generator in a napari
``GeneratorWorker``, mirrors the progress in a napari progress bar and a status label, and hands the result to a
callback on the **main thread** (the ``yielded``/``returned``/``finished`` signals are delivered there), so the
viewer is never touched from the worker. Cancel sets a :class:`threading.Event` that the core generator checks.

Each task is registered with the napari window's task status (as napari's own ``create_worker`` does): closing
the window while it runs lists it in napari's confirm dialog, then cancels it and waits (up to
:data:`CLOSE_WAIT_S`) for the core generator to end, so a feature cache is closed and unlocked, not left to a
thread that outlives the window or is killed mid-write at exit.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Generator, Iterator
from typing import Any

from magicgui.widgets import Label, PushButton
from napari.qt.threading import GeneratorWorker
from napari.utils import progress
from napari.utils.notifications import show_error, show_info

from napari_pathdistill._native import trim_heap
from napari_pathdistill._qt._task_warnings import WarningRelay
from napari_pathdistill.errors import Cancelled, PathDistillError
from napari_pathdistill.progress import Progress, cancel_scope

GeneratorFactory = Callable[[threading.Event], Iterator[Any]]
#: how long closing the window waits for a cancelled task's generator to end (s); a CPU batch takes ~1 s
CLOSE_WAIT_S = 20.0
PROVIDER = "napari-pathdistill"


class TaskRuntimeError(Exception):
    """A ``RuntimeError`` of a task's core generator, re-raised as another type (its cause is the original).

    superqt's worker takes any ``RuntimeError`` out of the generator for a deleted Qt object and ends without
    its ``errored`` and ``finished`` signals; but torch raises them for real failures (CUDA out of memory, a
    shape mismatch), as does h5py for I/O errors: the widget stayed "running" for ever (Run greyed out, the bar
    stuck, no message). Core generators never touch Qt, so none of theirs is a deleted Qt object.
    """


def error_message(exc: BaseException, what: str) -> str:
    """A message for a notification: user errors verbatim, anything else prefixed with what failed."""
    if isinstance(exc, PathDistillError):
        return str(exc)
    if isinstance(exc, TaskRuntimeError):
        return f"{what} failed: {exc}"
    return f"{what} failed: {type(exc).__name__}: {exc}"


def _drive(
    factory: GeneratorFactory, cancel: threading.Event, ended: threading.Event | None = None
) -> Generator[Any, None, None]:
    """Run ``factory(cancel)`` and re-yield its items; a generator ``return`` value is yielded last.
    ``ended`` is set in the worker thread once the core generator has ended, however it ended, after the heap it
    freed is given back (:func:`~napari_pathdistill._native.trim_heap`). The task runs in a
    :func:`~napari_pathdistill.progress.cancel_scope` of ``cancel``: Cancel stops it inside long numerical calls
    (PCA, k-means, large row reads: seconds each on 100k tiles) at their next iteration, not after them."""
    try:
        with cancel_scope(cancel, "Cancelled."):
            yield from _items(factory, cancel)
    except RuntimeError as exc:  # else superqt ends the worker silently (TaskRuntimeError)
        raise TaskRuntimeError(f"{type(exc).__name__}: {exc}") from exc
    finally:
        trim_heap()  # the task's freed buffers (tiles of several reader threads) back to the system
        if ended is not None:
            ended.set()


def _items(factory: GeneratorFactory, cancel: threading.Event) -> Generator[Any, None, None]:
    """``factory(cancel)``'s items, then its generator's return value when not None."""
    items = factory(cancel)
    if not isinstance(items, Generator):  # a plain iterator has no return value
        yield from items
        return
    result = yield from items
    if result is not None:
        yield result


def _napari_window(widget: Any) -> Any | None:
    """The napari ``Window`` that shows ``widget`` (else the current viewer's), if it keeps task statuses."""
    window = getattr(widget.native.window(), "_window", None)  # napari's QMainWindow keeps its Window there
    if window is None:
        from napari import current_viewer

        viewer = current_viewer()
        window = getattr(viewer, "window", None)
    return window if hasattr(window, "_register_task_status") else None


class _WindowTask:
    """One task's entry in the napari window's task status (napari's window-close protocol).

    On close, napari cancels every entry it holds (finished ones too): for a running task that sets its cancel
    event and waits for its generator to end; for an ended one it does nothing.
    """

    def __init__(self, window: Any, what: str, cancel: threading.Event, ended: threading.Event) -> None:
        from napari.utils.task_status import Status

        self.window, self.cancel, self.ended = window, cancel, ended
        self.closed = False
        self.id = window._register_task_status(PROVIDER, Status.BUSY, f"{what} running", self.close_cancel)

    def close_cancel(self) -> bool:
        if not self.ended.is_set():
            self.closed = True  # the window and its widgets are going: the task's end must not touch them
            self.cancel.set()
            self.ended.wait(CLOSE_WAIT_S)
        return True

    def update(self, status: str, description: str) -> None:
        from napari.utils.task_status import Status

        self.window._update_task_status(self.id, Status(status), description)


class TaskRunner:
    """Runs one long core computation at a time for a widget.

    Args:
        run_button: the widget's Run button (disabled while a task runs).
        cancel_button: the Cancel button (enabled only while a task runs).
        status: a label showing the stage and progress.
        also: the widget's other buttons that start a task on this runner (disabled with Run).
    """

    def __init__(
        self,
        run_button: PushButton,
        cancel_button: PushButton,
        status: Label,
        also: tuple[PushButton, ...] = (),
    ) -> None:
        self.run_button = run_button
        self.start_buttons = (run_button, *also)
        self.cancel_button = cancel_button
        self.status = status
        self.cancel_event = threading.Event()
        self.worker: GeneratorWorker | None = None
        self._bar: progress | None = None
        self._stage = ""  # the description the bar shows
        self._result: Any = None
        self._failed = False
        self._task: _WindowTask | None = None  # the running task's entry in napari's window task status
        self.cancel_button.enabled = False
        self.cancel_button.changed.connect(self.cancel)

    @property
    def running(self) -> bool:
        """Whether a task is in flight."""
        return self.worker is not None

    def start(
        self,
        factory: GeneratorFactory,
        on_result: Callable[[Any], None],
        what: str,
        on_item: Callable[[Any], None] | None = None,
        cancel_note: str = "nothing was added",
        on_end: Callable[[], None] | None = None,
    ) -> GeneratorWorker:
        """Start ``factory(cancel_event)`` in a worker thread; call ``on_result(result)`` on the main thread.

        Args:
            factory: builds the core generator; it must check the event it is given and stop when it is set.
            on_result: applied to the last non-Progress item, on the main thread, unless cancelled or failed. A
                status it sets (e.g. where it saved files) stays; left unchanged, the status becomes
                ``"<what>: done"``.
            what: short task name for the progress bar and error messages, e.g. ``"Embedding"``.
            on_item: called on the main thread with every item the generator yields (Progress included), e.g.
                to paint partial results while the task runs.
            cancel_note: what the cancel notification says was kept.
            on_end: called on the main thread when the task has ended, however it ended (after ``on_result``),
                e.g. to remove what a cancelled or failed task left empty.

        Returns:
            The started napari worker (tests may wait on its ``finished`` signal).
        """
        if self.running:
            raise RuntimeError("a task is already running; cancel it first")
        self.cancel_event, ended = threading.Event(), threading.Event()
        self._result, self._failed = None, False
        self._bar, self._stage = progress(total=0, desc=what), what
        # Built directly: errors are ours to report (napari 0.9.2 create_worker's task-status hook raises on them)
        worker = GeneratorWorker(_drive, factory, self.cancel_event, ended)
        window = _napari_window(self.run_button)
        self._task = _WindowTask(window, what, self.cancel_event, ended) if window is not None else None
        worker.yielded.connect(lambda item: self._on_yielded(item, worker, on_item))
        worker.errored.connect(lambda exc: self._on_error(exc, what))
        worker.warned.connect(WarningRelay(what))  # napari's worker relays none under PySide6
        worker.finished.connect(lambda: self._on_finished(on_result, what, cancel_note, on_end, worker))
        self.worker = worker
        self._enable_starts(False)
        self.status.value = f"{what}: starting..."
        worker.start()
        return worker

    def _enable_starts(self, on: bool) -> None:
        """The start buttons on (and Cancel off), or off while a task runs."""
        for button in self.start_buttons:
            button.enabled = on
        self.cancel_button.enabled = not on

    def cancel(self) -> None:
        """Ask the running core generator to stop (it checks the event between batches and at the checkpoints of
        long calls). Until it has, the status names the stage it waits for (a probe's fold, a similarity block),
        and the progress the task still yields does not replace that."""
        if self.worker is not None:
            self.cancel_event.set()
            self.status.value = f"cancelling: waiting for {self._stage} to stop..."

    def _on_yielded(
        self, item: Any, worker: GeneratorWorker, on_item: Callable[[Any], None] | None = None
    ) -> None:
        if worker is not self.worker or (self._task is not None and self._task.closed):
            return  # a late signal of a finished task, or one queued before the window closed on it
        if on_item is not None:
            on_item(item)
        if isinstance(item, Progress):
            pct = f" {100 * item.fraction:.0f}%" if item.total else ""
            if not self.cancel_event.is_set():  # else it says what the Cancel waits for
                self.status.value = f"{item.stage or 'working'}: {item.done}/{item.total or '?'}{pct}"
            if self._task is not None:
                self._task.update("busy", self.status.value)
            self._update_bar(item)  # last: napari's bar may process events (re-entrant signals)
        else:
            self._result = item

    def _update_bar(self, item: Progress) -> None:
        bar = self._bar
        if bar is None:
            return
        if bar.total != item.total:
            bar.total = item.total
        bar.n = item.done
        # one refresh per item: napari's Qt bar runs processEvents (a canvas redraw) on every value and every
        # description it is sent, so the description only goes when it changes (then it is the refresh)
        if item.stage and item.stage != self._stage:
            self._stage = item.stage
            bar.set_description(item.stage)
        else:
            bar.refresh()

    def say_error(self, exc: BaseException, what: str) -> None:
        """A failed or refused ``what``: one error notification, and the same line in the status (not the last
        run's 'done' beside it). For a run refused before it starts as for one that failed."""
        msg = error_message(exc, what)
        self.status.value = msg
        show_error(msg)

    def _on_error(self, exc: BaseException, what: str) -> None:
        self._failed = True
        if isinstance(exc, Cancelled):
            return
        self.say_error(exc, what)

    def _on_finished(
        self,
        on_result: Callable[[Any], None],
        what: str,
        cancel_note: str = "nothing was added",
        on_end: Callable[[], None] | None = None,
        worker: GeneratorWorker | None = None,
    ) -> None:
        if worker is not None:
            _disconnect(worker)
        task, self._task, self.worker = self._task, None, None
        if self._bar is not None:
            with contextlib.suppress(RuntimeError):  # its Qt bar may be gone with a closed window
                self._bar.close()
            self._bar = None
        if task is not None:
            state = "cancelled" if self.cancel_event.is_set() else "failed" if self._failed else "completed"
            task.update(state, what)
            if task.closed:  # cancelled by closing the window: its widgets and layers are gone
                return
        self._enable_starts(True)
        if self.cancel_event.is_set():
            self.status.value = f"{what} cancelled"
            show_info(f"{what} cancelled; {cancel_note}.")
        elif not self._failed:
            self._apply(on_result, what)
        if on_end is not None:
            on_end()

    def _apply(self, on_result: Callable[[Any], None], what: str) -> None:
        if self._result is None:
            self.status.value = f"{what}: no result"
            show_error(f"{what} produced no result.")
            return
        before = self.status.value
        try:
            on_result(self._result)
        except Exception as exc:
            self.say_error(exc, f"{what} (showing results)")
            return
        if self.status.value == before:  # the handler said nothing of its own: never overwrite what it said
            self.status.value = f"{what}: done"


def _disconnect(worker: GeneratorWorker) -> None:
    """Drop the finished worker's connections: Qt holds them (invisible to Python's gc), and through them the
    worker, the runner, its widget and its viewer; a viewer closed after one run was never freed (~35 MB)."""
    for signal in (worker.yielded, worker.errored, worker.warned, worker.finished):
        with contextlib.suppress(RuntimeError, TypeError):  # nothing (left) connected
            signal.disconnect()
