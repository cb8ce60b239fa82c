"""``pathdistill view --sample`` fits a 1280 x 1024 screen: every dock's Run and Cancel buttons are on screen.

Run under ``xvfb-run -a`` (its default screen is 1280x1024x24; the test refuses a larger one, where it would
prove nothing). The viewer is built by the command's own ``open_viewer``, not a subprocess.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from napari_pathdistill.cli.main import build_parser

pytestmark = pytest.mark.napari

DOCS_IMAGES = Path(__file__).resolve().parents[2] / "docs" / "images"


@pytest.fixture
def view(monkeypatch: pytest.MonkeyPatch, own_napari_app):
    """``view(*argv)`` opens the viewer as ``pathdistill view ARGV`` does; closes it afterwards."""
    from napari_pathdistill.cli.view import open_viewer

    monkeypatch.setenv("PATHDISTILL_COLOR", "raw")  # open_viewer sets it for --srgb; restored after the test
    monkeypatch.setenv("PATHDISTILL_ASSOCIATED", "")
    opened = []

    def _open(*argv: str):
        viewer, docks = open_viewer(build_parser().parse_args(["view", *argv]))
        opened.append(viewer)
        return viewer, docks

    yield _open
    for viewer in opened:
        viewer.close()


def _screen(widget):
    from qtpy.QtWidgets import QApplication

    return (widget.screen() or QApplication.primaryScreen()).availableGeometry()


def _fully_on_screen(button, screen) -> bool:
    """Visible, not clipped by any parent (its visible region is its whole rect), and inside ``screen``."""
    from qtpy.QtCore import QRect

    whole = button.rect()
    top_left = button.mapToGlobal(whole.topLeft())
    return (
        button.isVisible()
        and button.visibleRegion().boundingRect() == whole
        and screen.contains(QRect(top_left, whole.size()))
    )


def _settle(qtbot) -> None:
    from qtpy.QtWidgets import QApplication

    for _ in range(5):
        QApplication.processEvents()
    qtbot.wait(50)


def _sample_on_a_1280x1024_screen(view, qtbot):
    """``pathdistill view --sample`` settled on xvfb-run's 1280 x 1024 screen -> (docks, window, screen);
    skips on a larger screen, where fitting it would prove nothing."""
    viewer, docks = view("--sample")
    window = viewer.window._qt_window
    screen = _screen(window)
    if screen.width() > 1280 or screen.height() > 1024:
        pytest.skip(f"screen is {screen.width()}x{screen.height()}: run under xvfb-run -a (1280x1024)")
    _settle(qtbot)
    return docks, window, screen


def test_every_dock_shows_run_and_cancel_on_a_1280x1024_screen(view, qtbot) -> None:
    docks, window, screen = _sample_on_a_1280x1024_screen(view, qtbot)
    assert screen.contains(window.frameGeometry()), (window.frameGeometry(), screen)
    names = [dock.objectName() for dock, _ in docks]
    assert len(docks) == 6 and "Slide metadata" in names[0], names
    checked = 0
    for dock, widget in docks:
        dock.raise_()
        _settle(qtbot)
        for button in (getattr(widget, "run_button", None), getattr(widget, "cancel_button", None)):
            if button is not None:
                assert _fully_on_screen(button.native, screen), (dock.objectName(), button.text)
                checked += 1
    assert checked == 10  # Run + Cancel of the five task widgets
    if os.environ.get("PATHDISTILL_SAVE_SCREENSHOTS"):
        docks[0][0].raise_()
        _settle(qtbot)
        window.grab().save(str(DOCS_IMAGES / "view_sample_1280x1024.png"))


def test_dock_tabs_show_whole_labels_on_a_1280x1024_screen(view, qtbot) -> None:
    """Six tabs titled "<name> (napari-pathdistill)" were elided to "Sli...", "E...", "E..." (Embed or Evaluate?)."""
    from qtpy.QtWidgets import QLabel, QTabBar

    from napari_pathdistill.cli.view import WIDGETS

    docks, window, _ = _sample_on_a_1280x1024_screen(view, qtbot)
    bars = [bar for bar in window.findChildren(QTabBar) if bar.isVisible() and bar.count()]
    assert len(bars) == 1
    bar = bars[0]
    labels = [bar.tabText(i) for i in range(bar.count())]
    assert sorted(labels) == sorted(WIDGETS.values())
    for i, label in enumerate(labels):
        assert bar.tabRect(i).width() > bar.fontMetrics().horizontalAdvance(label), label  # drawn whole
        assert bar.tabRect(i).intersected(bar.rect()) == bar.tabRect(i), label  # no tab scrolled out of sight
    titles = {label.text() for dock, _ in docks for label in dock.findChildren(QLabel)}
    assert "Embed slide (napari-pathdistill)" in titles  # the dock's own title bar keeps the full name
    assert {dock.toggleViewAction().text() for dock, _ in docks} == {
        f"{n} (napari-pathdistill)" for n in WIDGETS
    }


def test_a_dock_taller_than_the_window_scrolls_to_its_buttons(view, qtbot) -> None:
    from qtpy.QtWidgets import QScrollArea, QWidget

    viewer, docks = view("--sample", "--widgets", "Evaluate")
    window = viewer.window._qt_window
    window.resize(900, 330)  # far smaller than the Evaluate dock's form
    _settle(qtbot)
    dock, widget = docks[0]
    area = dock.widget()
    assert isinstance(area, QScrollArea) and area.widget() is widget.native
    content = area.widget()
    bar = area.verticalScrollBar()
    bar.setValue(0)
    _settle(qtbot)
    assert bar.maximum() > 0  # the form is taller than the dock: without the scroll area it would be cut off
    rows = [w for w in content.children() if isinstance(w, QWidget) and w.isVisible()]
    bottom = max(rows, key=lambda w: w.geometry().bottom())
    assert bottom.visibleRegion().boundingRect() != bottom.rect()  # the lowest row is below the fold
    for button in (widget.run_button.native, widget.cancel_button.native):
        area.ensureWidgetVisible(button)
        _settle(qtbot)
        assert button.visibleRegion().boundingRect() == button.rect()  # reachable, whole, not cut off


def test_srgb_flag_opens_the_slide_converted(view, tcga_svs: Path) -> None:
    viewer, docks = view(str(tcga_svs), "--srgb", "--widgets", "Slide metadata")
    layer = viewer.layers[0]
    assert layer.metadata["pathdistill"]["color"] == "srgb"
    widget = docks[0][1]
    assert widget.srgb.value is True and widget.srgb.enabled
    assert "converted to sRGB" in widget.rows["ICC profile"].value


def _notified(pattern: str) -> list[str]:
    """The napari warning notifications of this session that match ``pattern``."""
    import re

    from napari.utils.notifications import NotificationSeverity, notification_manager

    return [n.message for n in notification_manager.records
            if n.severity == NotificationSeverity.WARNING and re.search(pattern, n.message)]  # fmt: skip


def test_srgb_flag_with_a_damaged_profile_warns_and_opens_raw(
    view, tmp_path: Path, cmu_rgb, tcga_svs: Path, capsys
) -> None:
    import numpy as np

    from _icc_files import srgb_profile_of, write_icc_tiff

    crop = np.ascontiguousarray(cmu_rgb[:256, :256])
    path = write_icc_tiff(tmp_path / "damaged.tif", crop, srgb_profile_of(tcga_svs)[:300])
    viewer, _ = view(str(path), "--srgb", "--widgets", "")
    said = _notified(r"damaged\.tif: its embedded ICC profile \(300 bytes\) cannot be read")
    assert len(said) == 1
    layer = viewer.layers[0]
    assert layer.metadata["pathdistill"]["color"] == "raw"
    np.testing.assert_array_equal(np.asarray(layer.data[0]), crop)
    out, err = capsys.readouterr()  # one line on the terminal: napari's (stdout) or ours (stderr): _notify
    assert (out + err).lower().count("warning: damaged.tif: its embedded icc profile") == 1
    assert "UserWarning" not in err


def test_no_mpp_and_unknown_associated_names_are_notified_in_the_window(view, tcga_svs: Path, capsys) -> None:
    """Opened before napari's event loop installs its warning hooks, the reader's warnings were printed on the
    terminal as Python's file:line dump and never reached the window."""
    view(str(tcga_svs), "--associated", "thumbnail,bogus", "--widgets", "")
    assert _notified(r"tcga-cr-7395-01a-01-ts1\.svs has no pixel size \(MPP\): opened in pixels")
    (unknown,) = _notified("has no associated image")
    assert unknown.startswith("tcga-cr-7395-01a-01-ts1.svs has no associated image 'bogus'; it has: ")
    assert "thumbnail" in unknown.split("it has: ")[1]
    out, err = capsys.readouterr()
    assert (out + err).lower().count("warning: ") == 2 and "UserWarning" not in err


def test_associated_all_leaves_the_metadata_dock_on_the_slide(view, cmu_svs: Path) -> None:
    viewer, docks = view(str(cmu_svs), "--associated", "all", "--widgets", "Slide metadata")
    assert viewer.layers.selection.active.name.endswith("]")  # the last associated image, as napari leaves it
    widget = docks[0][1]
    assert widget.layer is viewer.layers[0] and not widget.hint.visible
    assert widget.rows["file"].value.replace("\u200b", "").endswith("CMU-1-Small-Region.svs")


def test_view_of_a_missing_slide_fails_with_the_reason(tmp_path: Path, capsys, own_napari_app) -> None:
    from napari_pathdistill.cli.main import main

    assert main(["view", str(tmp_path / "missing.svs"), "--screenshot", str(tmp_path / "v.png")]) == 1
    # napari checks the path before any reader runs; its message is passed through, the viewer closed
    assert capsys.readouterr().err == f"error: Path '{tmp_path / 'missing.svs'}' does not exist.\n"
