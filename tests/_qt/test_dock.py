"""Docks opened from napari's Plugins menu scroll instead of pushing the window past a laptop's screen.

Before ``_qt._dock``, Tissue + Embed + Attention docked from the menu (``add_plugin_dock_widget``, stacked) made
napari's window at least ~1,750 px tall: the Run buttons lay below any laptop screen.
"""

from __future__ import annotations

import numpy as np
import pytest
from qtpy.QtCore import QPoint, QPointF, Qt
from qtpy.QtGui import QWheelEvent
from qtpy.QtWidgets import QApplication

from napari_pathdistill._qt._dock import DockScrollArea
from napari_pathdistill._qt.attention_widget import AttentionWidget
from napari_pathdistill._qt.embed_widget import EmbedWidget
from napari_pathdistill._qt.tissue_widget import TissueWidget

pytestmark = pytest.mark.napari

MENU = [("Tissue and tile grid", TissueWidget), ("Embed slide", EmbedWidget),
        ("Teacher vs student attention", AttentionWidget)]  # fmt: skip
LAPTOP = (1280, 720)


def _dock_from_menu(viewer, qtbot, display_name: str):
    dock, widget = viewer.window.add_plugin_dock_widget("napari-pathdistill", display_name)
    # the widget wraps its dock on the next event-loop turn
    qtbot.waitUntil(lambda: isinstance(dock.widget(), DockScrollArea), timeout=60_000)
    return dock, widget


def _settle(qtbot) -> None:
    for _ in range(5):
        QApplication.processEvents()
    qtbot.wait(50)


def _whole(button) -> bool:
    return button.isVisible() and button.visibleRegion().boundingRect() == button.rect()


def test_three_menu_docks_fit_a_1280x720_window_and_scroll_to_their_buttons(
    make_napari_viewer, qtbot, open_slide, cmu_svs, save_screenshot
):
    viewer = make_napari_viewer(show=True)
    window = viewer.window._qt_window
    docked = [(*_dock_from_menu(viewer, qtbot, name), cls) for name, cls in MENU]
    assert window.minimumSizeHint().height() <= LAPTOP[1]  # was ~1,750 px with the three forms unwrapped
    window.resize(*LAPTOP)
    _settle(qtbot)
    assert window.height() == LAPTOP[1]
    for dock, widget, cls in docked:
        assert isinstance(widget, cls)
        area = dock.widget()
        assert area.widget() is widget.native
        assert viewer.window.dock_widgets[dock.name] is widget  # napari's inner_widget() sees the form
        for button in (widget.run_button.native, widget.cancel_button.native):
            area.ensureWidgetVisible(button)
            _settle(qtbot)
            assert _whole(button), (dock.name, button.text())
    bars = [dock.widget().verticalScrollBar() for dock, _, _ in docked]
    assert any(bar.maximum() > 0 for bar in bars)  # it did need to scroll
    open_slide(viewer, cmu_svs)
    save_screenshot(viewer, "docks_1280x720.png")  # each dock scrolled to its Run and Cancel
    again = viewer.window.add_plugin_dock_widget("napari-pathdistill", "Embed slide")[1]
    assert again is docked[1][1]  # the menu's second click finds the same widget
    layer = viewer.layers[0]  # napari still drives the slide choosers (reset_choices)
    assert all(layer in widget.slide.choices for _, widget, _ in docked)


def test_tabified_docks_fit_a_1280x720_window(make_napari_viewer, qtbot):
    """Docked as tabs (``add_plugin_dock_widget(..., tabify=True)``, as ``pathdistill view`` docks all six), a
    dock kept the minimum height of its unwrapped form (Embed: 709 px): the window could not be shorter than
    ~775 px, past a 1280 x 720 laptop screen, and the scroll area never got to scroll."""
    viewer = make_napari_viewer(show=True)
    window = viewer.window._qt_window
    docks = []
    for i, (name, _cls) in enumerate(MENU):
        dock, _ = viewer.window.add_plugin_dock_widget("napari-pathdistill", name, tabify=i > 0)
        qtbot.waitUntil(lambda d=dock: isinstance(d.widget(), DockScrollArea), timeout=60_000)
        docks.append(dock)
    _settle(qtbot)
    for dock in docks:
        assert dock.minimumSizeHint().height() < 300, dock.name  # was the whole form: 360, 709, 613 px
    assert window.minimumSizeHint().height() <= LAPTOP[1]
    window.resize(*LAPTOP)
    _settle(qtbot)
    assert window.height() == LAPTOP[1]


def test_a_dock_with_room_shows_its_whole_form(make_napari_viewer, qtbot):
    viewer = make_napari_viewer(show=True)
    dock, widget = _dock_from_menu(viewer, qtbot, "Embed slide")
    viewer.window._qt_window.resize(1280, 1000)
    _settle(qtbot)
    assert dock.widget().verticalScrollBar().maximum() == 0  # no scroll bar: the size hint is the form's
    assert _whole(widget.run_button.native) and _whole(widget.search.native)


def _wheel(widget, steps: int = -3) -> None:
    """One wheel turn (``steps`` notches, negative = towards the user) over the middle of ``widget``."""
    centre = QPointF(widget.rect().center())
    event = QWheelEvent(centre, QPointF(widget.mapToGlobal(centre.toPoint())), QPoint(0, 0),
                        QPoint(0, 120 * steps), Qt.MouseButton.NoButton, Qt.KeyboardModifier.NoModifier,
                        Qt.ScrollPhase.NoScrollPhase, False)  # fmt: skip
    QApplication.sendEvent(widget, event)


def test_the_wheel_over_an_unfocused_field_scrolls_the_dock_not_the_value(make_napari_viewer, qtbot):
    viewer = make_napari_viewer(show=True)
    dock, widget = _dock_from_menu(viewer, qtbot, "Embed slide")
    viewer.window._qt_window.resize(*LAPTOP)
    _settle(qtbot)
    bar = dock.widget().verticalScrollBar()
    assert bar.maximum() > 0 and bar.value() == 0
    for field, before in ((widget.mpp, 0.5), (widget.model.choice, widget.model.choice.value)):
        assert field.value == before
        _wheel(field.native)
        _settle(qtbot)
        assert field.value == before  # what a scroll past "um/px" or the model used to change unseen
    assert bar.value() > 0  # the wheel scrolled the dock instead
    assert widget.mpp.native.focusPolicy() == Qt.FocusPolicy.StrongFocus  # a click still focuses it


def test_closing_a_dock_mid_run_keeps_the_widget_alive_to_finish(
    make_napari_viewer, qtbot, cmu_svs, tiny_vit, open_slide, wait_for, tmp_path
):
    import gc

    viewer = make_napari_viewer(show=True)
    slide = open_slide(viewer, cmu_svs)
    dock, widget = _dock_from_menu(viewer, qtbot, "Embed slide")
    widget.model.set_model(tiny_vit)
    widget.tile_px.value, widget.mpp.value = tiny_vit.spec.tile_px, 2.0  # a few large tiles: fast on CPU
    widget.slide.value, widget.cache_dir.value = slide, tmp_path
    widget.run()
    dock.destroyOnClose()  # the dock's close button: napari unparents the dock's widget (our scroll area)
    gc.collect()
    _settle(qtbot)
    wait_for(widget)  # the run finishes into the closed widget's fields and the viewer's layers
    assert widget.result is not None and widget.status.value.startswith("Embedding: done")
    assert f"{slide.name} clusters" in viewer.layers
    assert widget.native.parent() is None and not widget.native.isVisible()  # not a stray top-level window


def test_the_attention_opacity_readout_shows_its_value(make_napari_viewer, qtbot) -> None:
    """magicgui's slider readout is a button-less spin box that napari's style sheet squeezed to a 1 px text
    field ("1.00" drew as ":"); docked from the menu, the whole value fits now."""
    from qtpy.QtWidgets import QAbstractSpinBox

    viewer = make_napari_viewer(show=True)
    _, widget = _dock_from_menu(viewer, qtbot, "Teacher vs student attention")
    _settle(qtbot)
    box = widget.opacity.native.findChild(QAbstractSpinBox)
    edit = box.lineEdit()
    assert box.isVisible() and edit.text() == "1.00"
    assert edit.width() >= edit.fontMetrics().horizontalAdvance("1.00")


def test_a_form_that_grows_wider_widens_its_dock_instead_of_being_cut(make_napari_viewer, qtbot) -> None:
    """The scroll area never scrolls sideways, so a form wider than its viewport lost its right edge: the tile
    search line "tile 0: 30 tiles in OS-2-vsi.ome.tif with cosine >= 0.766" cut "Choose directory" to "Choo"."""
    from magicgui.widgets import Label

    viewer = make_napari_viewer(show=True)
    dock, widget = _dock_from_menu(viewer, qtbot, "Embed slide")
    viewer.window._qt_window.resize(1500, 600)  # short: the dock scrolls vertically
    _settle(qtbot)
    area = dock.widget()
    assert area.verticalScrollBar().isVisible()
    wide = Label(value="a row wider than the dock was when it opened " * 2)  # a plain label: fixed width
    widget.append(wide)
    _settle(qtbot)
    assert wide.native.width() > 500
    _whole_width(qtbot, area)  # the dock widened to its form; nothing cut


def test_the_tile_search_summary_wraps(make_napari_viewer, qtbot) -> None:
    viewer = make_napari_viewer(show=True)
    dock, widget = _dock_from_menu(viewer, qtbot, "Embed slide")
    _settle(qtbot)
    area = dock.widget()
    before = area.width()
    widget.search.summary.value = (
        "tile 0: 30 tiles in " + "a-very-long-slide-name_" * 6 + ".ome.tif with cosine >= 0.766"
    )
    _settle(qtbot)
    assert area.width() == before  # the line wraps instead of widening the form
    _whole_width(qtbot, area)


def _whole_width(qtbot, area) -> None:
    """The form is no wider than the area's viewport (else its right edge is cut off: no sideways scrolling).
    Waited for: while Qt settles a scroll area, its bar can show for a moment over a form that fits."""
    qtbot.waitUntil(lambda: area.widget().width() <= area.viewport().width(), timeout=60_000)


def test_a_closed_embed_dock_stops_answering_clicks_and_lets_go_of_its_maps(make_napari_viewer, qtbot):
    """Each closed Embed dock kept its click handler in the viewer: reopened three times, a tile click ran the
    similar-tiles search four times, and every closed widget stayed in memory with its maps."""
    import gc
    import weakref

    viewer = make_napari_viewer(show=True)
    before = len(viewer.mouse_drag_callbacks)
    refs = []
    for _ in range(3):
        dock, widget = _dock_from_menu(viewer, qtbot, "Embed slide")
        assert widget._on_click in viewer.mouse_drag_callbacks
        widget.result, widget.maps.live = object(), np.zeros((4, 4, 4), np.float32)  # as after a run
        refs.append(weakref.ref(widget))
        dock.destroyOnClose()  # the dock's close button
        assert widget._on_click not in viewer.mouse_drag_callbacks
        del widget, dock
    _settle(qtbot)
    gc.collect()
    assert len(viewer.mouse_drag_callbacks) == before
    # what a closed dock still holds is magicgui's (its FloatSlider keeps a form alive), not the maps
    assert all(r() is None or (r().result is None and r().maps.live is None) for r in refs)
    _, widget = _dock_from_menu(viewer, qtbot, "Embed slide")  # the one open dock answers
    assert viewer.mouse_drag_callbacks.count(widget._on_click) == 1


@pytest.mark.parametrize(
    "name", ["Tissue and tile grid", "Cross-stain similarity", "Slide metadata", "Evaluate"]
)
def test_a_closed_dock_is_freed(make_napari_viewer, qtbot, name):
    """shiboken kept the closed form as a child of the scroll area, and layer choosers connected lambdas to the
    viewer's layer events: every closed dock lived on, answering layer events, until the viewer closed."""
    import gc
    import weakref

    viewer = make_napari_viewer(show=True)
    dock, widget = _dock_from_menu(viewer, qtbot, name)
    ref = weakref.ref(widget)
    dock.destroyOnClose()
    del widget, dock
    _settle(qtbot)
    gc.collect()
    assert ref() is None
