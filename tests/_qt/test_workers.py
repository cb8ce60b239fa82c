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


@pytest.fixture
def runner(make_napari_viewer):
    make_napari_viewer()
    return TaskRunner(PushButton(text="Run"), PushButton(text="Cancel"), Label())


def test_result_reaches_main_thread(runner, qtbot):
    got = {}

    def on_result(value):
        got["value"], got["main"] = value, QThread.currentThread() is QApplication.instance().thread()

    worker = runner.start(lambda c: _sum_squares(50, c), on_result, "Squares")
    assert runner.running and not runner.run_button.enabled and runner.cancel_button.enabled
    with qtbot.waitSignal(worker.finished, timeout=60_000):
        pass
    qtbot.waitUntil(lambda: "value" in got, timeout=30_000)
    assert got["value"] == sum(i * i for i in range(50))
    assert got["main"] is True
    assert not runner.running and runner.run_button.enabled and not runner.cancel_button.enabled
    assert runner.status.value == "Squares: done"


def test_cancel_discards_result(runner, qtbot, monkeypatch):
    infos, got = [], []
    monkeypatch.setattr(_workers, "show_info", infos.append)
    worker = runner.start(lambda c: _sum_squares(10_000, c, delay=0.001), got.append, "Squares")
    qtbot.waitUntil(lambda: "squares" in runner.status.value, timeout=30_000)
    runner.cancel_button.changed.emit(True)
    with qtbot.waitSignal(worker.finished, timeout=60_000):
        pass
    qtbot.waitUntil(lambda: not runner.running, timeout=30_000)
    assert got == []
    assert infos and "cancelled" in infos[0]
    assert runner.status.value == "Squares cancelled"


def test_error_becomes_notification(runner, qtbot, monkeypatch):
    errors, got = [], []
    monkeypatch.setattr(_workers, "show_error", errors.append)

    def failing(cancel):
        yield Progress(0, 1, "loading")
        raise ModelLoadError("Weights for 'h-optimus-0' not found; put them in ~/.cache.")

    worker = runner.start(failing, got.append, "Embedding")
    with qtbot.waitSignal(worker.finished, timeout=60_000):
        pass
    qtbot.waitUntil(lambda: bool(errors), timeout=30_000)
    assert errors == ["Weights for 'h-optimus-0' not found; put them in ~/.cache."]
    assert got == [] and runner.run_button.enabled


def test_error_message_wraps_unexpected_errors():
    assert error_message(ValueError("bad shape"), "Embedding") == "Embedding failed: ValueError: bad shape"
    assert error_message(ModelLoadError("say what to do"), "Embedding") == "say what to do"


def test_second_start_is_refused(runner, qtbot):
    arr = np.arange(5)
    worker = runner.start(lambda c: _sum_squares(200, c, delay=0.002), lambda v: None, "Squares")
    with pytest.raises(RuntimeError, match="already running"):
        runner.start(lambda c: iter(arr), lambda v: None, "Other")
    runner.cancel()
    with qtbot.waitSignal(worker.finished, timeout=60_000):
        pass
