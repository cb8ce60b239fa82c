"""TaskRunner: progress, result on the main thread, cancel, errors -> notifications (real napari viewer)."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from magicgui.widgets import Label, PushButton
from qtpy.QtCore import QThread
from qtpy.QtWidgets import QApplication

from napari_pathdistill._qt import _workers
from napari_pathdistill._qt._workers import TaskRunner, error_message
from napari_pathdistill.errors import Cancelled, ModelLoadError
from napari_pathdistill.progress import Progress

pytestmark = pytest.mark.napari


def _sum_squares(n: int, cancel: threading.Event, delay: float = 0.0):
    """A pure core-style generator: yields Progress per step, returns the sum of squares 0..n-1."""
    total = 0
    for i in range(n):
        if cancel.is_set():
            raise Cancelled("stopped")
        total += i * i
        yield Progress(i + 1, n, "squares")
        time.sleep(delay)
    return total


def _wait_finished(runner: TaskRunner, qtbot) -> None:
    """Wait until the task has finished on the main thread (``TaskRunner._on_finished`` ran).

    A state, not ``qtbot.waitSignal(worker.finished)``: entered after ``start`` returns, that can miss a
    ``finished`` already delivered (a fast worker whose queued signals napari's progress bar processed).
    """
    qtbot.waitUntil(lambda: not runner.running, timeout=60_000)


@pytest.fixture
def runner(make_napari_viewer):
    make_napari_viewer()
    return TaskRunner(PushButton(text="Run"), PushButton(text="Cancel"), Label())


def test_result_reaches_main_thread(runner, qtbot):
    got = {}

    def on_result(value):
        got["value"], got["main"] = value, QThread.currentThread() is QApplication.instance().thread()

    ends = []
    runner.start(
        lambda c: _sum_squares(50, c), on_result, "Squares", on_end=lambda: ends.append("value" in got)
    )
    assert runner.running and not runner.run_button.enabled and runner.cancel_button.enabled
    _wait_finished(runner, qtbot)
    qtbot.waitUntil(lambda: "value" in got, timeout=30_000)
    assert got["value"] == sum(i * i for i in range(50))
    assert got["main"] is True
    assert not runner.running and runner.run_button.enabled and not runner.cancel_button.enabled
    assert runner.status.value == "Squares: done" and ends == [True]  # once, after the result


def test_a_status_the_result_handler_sets_stays(runner, qtbot):
    """The Evaluate widget's 'saved ... in <dir>' was overwritten by 'Evaluation: done' right after it was set."""

    def on_result(value):
        runner.status.value = f"saved {value} in /somewhere"

    runner.start(lambda c: _sum_squares(5, c), on_result, "Squares")
    _wait_finished(runner, qtbot)
    assert runner.status.value == "saved 30 in /somewhere"


def test_cancel_discards_result(runner, qtbot, monkeypatch):
    infos, got = [], []
    monkeypatch.setattr(_workers, "show_info", infos.append)
    ends = []
    runner.start(
        lambda c: _sum_squares(10_000, c, delay=0.001), got.append, "Squares", on_end=lambda: ends.append(1)
    )
    qtbot.waitUntil(lambda: "squares" in runner.status.value, timeout=30_000)
    runner.cancel_button.changed.emit(True)
    _wait_finished(runner, qtbot)
    assert got == [] and ends == [1]
    assert infos and "cancelled" in infos[0]
    assert runner.status.value == "Squares cancelled"


def test_error_becomes_notification(runner, qtbot, monkeypatch):
    errors, got = [], []
    monkeypatch.setattr(_workers, "show_error", errors.append)

    def failing(cancel):
        yield Progress(0, 1, "loading")
        raise ModelLoadError("Weights for 'h-optimus-0' not found; put them in ~/.cache.")

    ends = []
    runner.start(failing, got.append, "Embedding", on_end=lambda: ends.append(1))
    _wait_finished(runner, qtbot)
    qtbot.waitUntil(lambda: bool(errors), timeout=30_000)
    assert errors == ["Weights for 'h-optimus-0' not found; put them in ~/.cache."]
    assert got == [] and runner.run_button.enabled and ends == [1]


def test_error_message_wraps_unexpected_errors():
    assert error_message(ValueError("bad shape"), "Embedding") == "Embedding failed: ValueError: bad shape"
    assert error_message(ModelLoadError("say what to do"), "Embedding") == "say what to do"


def test_second_start_is_refused(runner, qtbot):
    arr = np.arange(5)
    # long enough to be running at the cancel below whatever the load (200 x 2 ms could end before it)
    runner.start(lambda c: _sum_squares(100_000, c, delay=0.001), lambda v: None, "Squares")
    with pytest.raises(RuntimeError, match="already running"):
        runner.start(lambda c: iter(arr), lambda v: None, "Other")
    runner.cancel()
    _wait_finished(runner, qtbot)
    assert runner.status.value == "Squares cancelled" and runner.run_button.enabled


def test_task_finished_before_the_test_waits(runner, qtbot):
    """The race of issue 15: the worker finishes, and its signals are delivered, before the wait is entered."""
    got = []
    runner.start(lambda c: _sum_squares(3, c), got.append, "Squares")
    deadline = time.monotonic() + 30
    while runner.running and time.monotonic() < deadline:  # deliver finished before any wait is entered
        time.sleep(0.01)
        QApplication.processEvents()
    assert not runner.running
    _wait_finished(runner, qtbot)  # returns at once
    assert got == [5] and runner.status.value == "Squares: done"


def test_bar_description_is_sent_once_per_stage(runner, qtbot, monkeypatch):
    """napari's Qt bar runs processEvents (a canvas redraw) on every description it is sent: once per stage, not
    once per progress item (a 67 ms stall each on this CPU)."""
    sent = []
    real = _workers.progress.set_description
    monkeypatch.setattr(
        _workers.progress, "set_description", lambda bar, d: (sent.append(d), real(bar, d))[1]
    )

    def stages(cancel):
        for i in range(30):
            yield Progress(i, 30, "reading" if i < 10 else "embedding")
        yield 1

    got = []
    runner.start(stages, got.append, "Embedding")
    _wait_finished(runner, qtbot)
    assert got == [1] and sent == ["reading", "embedding"]


def test_closing_the_window_cancels_a_running_task_and_waits_for_it_to_end(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    runner = TaskRunner(PushButton(text="Run"), PushButton(text="Cancel"), Label())
    ended: list[str] = []

    def slow(cancel):
        try:
            yield from _sum_squares(100_000, cancel, delay=0.01)
        finally:
            ended.append(threading.current_thread().name)  # the core generator's clean-up ran (worker thread)

    results: list[int] = []
    runner.start(slow, results.append, "Squares")
    qtbot.waitUntil(lambda: runner.status.value.startswith("squares: "), timeout=60_000)
    assert viewer.window._task_status_manager.get_status() == [f"napari-pathdistill: {runner.status.value}"]
    viewer.close()  # what napari's window close runs (a user's close first lists the task in its dialog)
    assert ended and ended[0] != threading.main_thread().name  # ended before close returned, in the worker
    assert runner.cancel_event.is_set()
    status = runner.status.value
    qtbot.waitUntil(lambda: not runner.running, timeout=60_000)
    assert results == [] and runner.status.value == status  # the end leaves the closed window's widgets alone
    assert viewer.window._task_status_manager.get_status() == []  # cancelled: nothing busy remains


def test_closing_the_window_after_a_task_ended_changes_nothing(runner, qtbot):
    import napari

    results: list[int] = []
    runner.start(lambda c: _sum_squares(5, c), results.append, "Squares")
    _wait_finished(runner, qtbot)
    assert results == [sum(i * i for i in range(5))] and not runner.cancel_event.is_set()
    napari.current_viewer().close()  # napari "cancels" every task it holds, finished ones included
    assert not runner.cancel_event.is_set() and runner.status.value == "Squares: done"


def test_a_closed_viewer_is_freed_after_a_run(qtbot, own_napari_app):
    """Qt held the lambdas connected to a worker's signals, and through them the runner, its widget and the
    viewer: after one run a closed viewer was never freed (~35 MB a viewer over an afternoon)."""
    import gc
    import weakref

    import napari

    from napari_pathdistill._qt.tissue_widget import TissueWidget

    viewer = napari.Viewer(show=False)
    widget = TissueWidget(viewer)
    viewer.window.add_dock_widget(widget)
    worker = widget.runner.start(lambda c: _sum_squares(3, c), lambda r: None, "Squares")
    _wait_finished(widget.runner, qtbot)
    refs = [weakref.ref(o) for o in (viewer, widget, worker)]
    del worker, widget
    viewer.close()
    del viewer
    for _ in range(3):
        QApplication.processEvents()
        gc.collect()
    assert [r() is None for r in refs] == [True, True, True]


@pytest.mark.parametrize("how", ["done", "cancelled", "failed"])
def test_the_heap_a_task_freed_is_given_back_once_it_ends(runner, qtbot, monkeypatch, how):
    """glibc keeps the buffers a slide's reader threads freed (+175 MB resident after a 2,352-tile embed, all of it
    freed): each task ends with ``malloc_trim`` in its worker thread, however it ends, before ``ended``."""
    trims: list[bool] = []
    monkeypatch.setattr(
        _workers, "trim_heap", lambda: trims.append(QThread.currentThread() is not None) or True
    )
    monkeypatch.setattr(_workers, "show_error", lambda *_: None)
    monkeypatch.setattr(_workers, "show_info", lambda *_: None)

    def task(cancel: threading.Event):
        yield Progress(0, 1, "work")
        if how == "failed":
            raise ValueError("broken")
        if how == "cancelled":
            raise Cancelled("stopped")
        return 1

    runner.start(task, lambda _v: None, "Task")
    _wait_finished(runner, qtbot)
    assert len(trims) == 1


def test_trim_heap_gives_freed_thread_buffers_back() -> None:
    """The real call, on memory freed by threads as a slide's readers leave it (glibc only)."""
    import sys

    from napari_pathdistill._native import trim_heap

    if not sys.platform.startswith("linux"):
        assert trim_heap() is False
        return
    blocks = [bytearray(100_000) for _ in range(2_000)]  # 200 MB of small heap chunks, then freed
    del blocks
    assert trim_heap() is True


@pytest.mark.parametrize("exc", [RuntimeError("CUDA out of memory"), NotImplementedError("no such op")])
def test_a_runtime_error_of_the_task_ends_it_with_a_message(runner, qtbot, monkeypatch, exc):
    """torch's CUDA out-of-memory and shape errors (and h5py's I/O errors) are RuntimeErrors, which superqt's
    worker took for a deleted Qt object: no ``errored``, no ``finished``, the widget running for ever."""
    errors, ends = [], []
    monkeypatch.setattr(_workers, "show_error", errors.append)

    def task(cancel: threading.Event):
        yield Progress(0, 1, "embedding")
        raise exc

    runner.start(task, lambda _v: None, "Embedding", on_end=lambda: ends.append(1))
    _wait_finished(runner, qtbot)
    qtbot.waitUntil(lambda: bool(errors), timeout=30_000)
    assert errors == [f"Embedding failed: {type(exc).__name__}: {exc}"]
    assert runner.run_button.enabled and not runner.cancel_button.enabled and ends == [1]
    assert runner.status.value == errors[0]


def test_warnings_of_a_task_become_notifications_each_once(runner, qtbot):
    """A task's warnings (CorruptTileWarning: tiles skipped, holes in the map) reached no one in the GUI: napari's
    GeneratorWorker does not relay its ``warned`` signal under PySide6. Each distinct warning is now shown once
    through napari's notification manager, and a flood stops after a few with one note."""
    import warnings

    from napari.utils.notifications import notification_manager

    from napari_pathdistill._qt._task_warnings import MAX_SHOWN
    from napari_pathdistill.errors import CorruptTileWarning

    def warning(cancel):
        for i in range(3):  # the same message three times: shown once
            warnings.warn(
                "slide.svs: 2 tiles could not be read and were skipped", CorruptTileWarning, stacklevel=1
            )
            yield Progress(i + 1, 3, "embedding")
        for i in range(MAX_SHOWN + 3):  # distinct messages: MAX_SHOWN shown, then one note
            warnings.warn(f"tile {i} could not be decoded", CorruptTileWarning, stacklevel=1)
        return 1

    seen = len(notification_manager.records)
    got: list = []
    runner.start(warning, got.append, "Embedding")
    _wait_finished(runner, qtbot)
    messages = [str(r.message) for r in notification_manager.records[seen:]]
    assert got == [1]
    assert messages[0] == "slide.svs: 2 tiles could not be read and were skipped"
    assert messages[1:-1] == [f"tile {i} could not be decoded" for i in range(MAX_SHOWN - 1)]
    assert messages[-1] == f"Embedding: more warnings than the {MAX_SHOWN} shown; the rest are not shown."


def test_cancel_stops_a_task_inside_a_long_numerical_call(runner, qtbot, monkeypatch):
    """Cancel during the final PCA / k-means of 100k tiles waited for the whole call: a task runs in a cancel
    scope, so the checkpoints of such calls (``progress.checkpoint``) stop it at their next iteration."""
    from napari_pathdistill.progress import checkpoint

    monkeypatch.setattr(_workers, "show_info", lambda *_: None)
    iterations = [0]

    def long_call() -> str:  # one core call, e.g. k-means: no Progress and no cancel argument inside
        for _ in range(3_000):
            checkpoint()
            iterations[0] += 1
            time.sleep(0.01)
        return "ran to the end"

    def task(cancel):
        yield Progress(0, 1, "k-means")
        return long_call()

    got = []
    runner.start(task, got.append, "Clusters")
    qtbot.waitUntil(lambda: iterations[0] > 5, timeout=30_000)
    runner.cancel_button.changed.emit(True)
    _wait_finished(runner, qtbot)
    assert got == [] and runner.status.value == "Clusters cancelled"
    assert iterations[0] < 3_000  # stopped inside the call, not after 30 s of it


def test_after_cancel_the_status_says_what_it_waits_for_until_the_task_ends(runner, qtbot, monkeypatch):
    """Was: Cancel showed 'cancelling...', and the next progress of the step still running (a probe's fold, a
    similarity block) replaced it with 'fold: 1/5 20%', as if the Cancel had not been seen. The status now names
    the stage the Cancel waits for until the task has stopped."""
    monkeypatch.setattr(_workers, "show_info", lambda *_: None)
    items, release = [], threading.Event()

    def task(cancel):
        yield Progress(0, 5, "fold")
        cancel.wait(30)
        yield Progress(1, 5, "fold")  # the fold in flight reports once more before it stops
        release.wait(30)
        raise Cancelled("stopped")

    runner.start(task, lambda _: None, "Evaluation", on_item=items.append)
    qtbot.waitUntil(lambda: runner.status.value.startswith("fold"), timeout=30_000)
    runner.cancel_button.changed.emit(True)
    assert runner.status.value == "cancelling: waiting for fold to stop..."
    qtbot.waitUntil(lambda: len(items) == 2, timeout=30_000)
    assert runner.status.value == "cancelling: waiting for fold to stop..."
    release.set()
    _wait_finished(runner, qtbot)
    assert runner.status.value == "Evaluation cancelled"
