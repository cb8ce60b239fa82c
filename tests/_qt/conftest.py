"""Helpers for the widget tests: open real slides through our reader and wait for a widget's task."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


def _open_slide(viewer, path: Path):
    """Add the slide at ``path`` to ``viewer`` exactly as File > Open with our reader does."""
    from napari_pathdistill._reader import get_reader

    reader = get_reader(str(path))
    assert reader is not None, f"our reader refuses {path}"
    data, kwargs, kind = reader(str(path))[0]
    assert kind == "image"
    return viewer.add_image(data, **kwargs)


DOCS_IMAGES = Path(__file__).resolve().parents[2] / "docs" / "images"


@pytest.fixture
def save_screenshot(tmp_path):
    """``save_screenshot(viewer, name)``: the whole window, checked to be drawn (not one flat colour), into
    docs/images when PATHDISTILL_SAVE_SCREENSHOTS is set (regenerating the docs), else into the test's tmp dir:
    a plain test run leaves the tracked screenshots alone."""

    def save(viewer, name: str) -> None:
        import imageio.v3 as iio

        shot = viewer.screenshot(canvas_only=False, flash=False)
        assert shot[..., :3].std() > 10  # the window drew (not one flat colour)
        out = DOCS_IMAGES if os.environ.get("PATHDISTILL_SAVE_SCREENSHOTS") else tmp_path
        out.mkdir(parents=True, exist_ok=True)
        iio.imwrite(out / name, shot)

    return save


@pytest.fixture
def open_slide():
    """``open_slide(viewer, path)`` adds a slide through our reader, as File > Open does."""
    return _open_slide


@pytest.fixture
def wait_for(qtbot):
    """``wait_for(widget)`` waits until the widget's task has finished and its results are applied."""

    def wait(widget, timeout: int = 120_000) -> None:
        qtbot.waitUntil(lambda: not widget.runner.running, timeout=timeout)

    return wait


@pytest.fixture
def tiny_vit():
    """A tiny randomly initialised ViT of the project's architecture family (fast on CPU)."""
    from napari_pathdistill.models.testing import tiny_model

    return tiny_model()


@pytest.fixture
def errors(monkeypatch):
    """Collects the messages of napari error notifications raised by the widgets."""
    import napari.utils.notifications as notifications

    from napari_pathdistill._qt import _workers

    seen: list[str] = []
    monkeypatch.setattr(notifications, "show_error", seen.append)
    monkeypatch.setattr(_workers, "show_error", seen.append)
    return seen
