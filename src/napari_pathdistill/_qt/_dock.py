"""Docks that scroll instead of growing napari's window past the screen.

napari docks a magicgui Container's ``native`` widget as it is (napari/napari#4579, #5247), so a dock can never
be shorter than its form: the Embed form alone needs ~690 px, Tissue + Embed from the Plugins menu force the
window to ~1,120 px and three of our docks to ~1,750 px, pushing the Run buttons below a laptop's screen.
(magicgui's ``scrollable=True`` does not help there: napari docks ``.native``, the widget inside its scroll area.)

Each widget calls :func:`scroll_when_docked` on itself; once napari has put it in a dock (from the Plugins
menu, ``add_dock_widget``, ``add_plugin_dock_widget`` or ``pathdistill view``), the dock's widget becomes a
:class:`DockScrollArea` around the form. The dock still opens at the form's natural height when there is room;
only when there is not does it shrink and scroll. The wheel then scrolls the dock: over a spin box, combo box or
slider it changes the value only once that field has been clicked (has the focus), so scrolling past "um/px" never
changes it unseen.
"""

from __future__ import annotations

from typing import Any

from qtpy.QtCore import QEvent, QObject, QSize, Qt, QTimer
from qtpy.QtWidgets import (
    QAbstractSlider,
    QAbstractSpinBox,
    QApplication,
    QComboBox,
    QDockWidget,
    QFrame,
    QScrollArea,
    QWidget,
)

#: the least height a dock's scroll area asks for (px): a title's worth of form stays visible
MIN_HEIGHT = 120


class DockScrollArea(QScrollArea):
    """Frameless vertical scroll area around a dock's form.

    Its size hint is the form's (a ``QScrollArea`` caps its hint at 24 text lines, which would open a roomy dock
    half empty with a scroll bar); its minimum height is :data:`MIN_HEIGHT`; its width is the form's minimum width
    plus the scroll bar, so no horizontal scrolling is needed. Unfocused value fields pass the wheel to the scroll
    bar (see :class:`_WheelScrolls`).
    """

    def __init__(self, form: QWidget, magic_widget: Any = None) -> None:
        super().__init__()
        self.setObjectName(f"{form.objectName() or type(form).__name__}_scroll")
        self.setWidgetResizable(True)
        self.setFrameShape(QFrame.Shape.NoFrame)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAsNeeded)
        self._form_least_width = -1
        self._container = magic_widget  # told when the dock closes (on_dock_change)
        self.setWidget(form)
        self._wheel = _WheelScrolls(self)
        for kind in (QAbstractSpinBox, QComboBox, QAbstractSlider):
            for field in form.findChildren(kind):
                # StrongFocus, not their default WheelFocus: the wheel must not give them the focus
                field.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
                field.installEventFilter(self._wheel)
        if magic_widget is not None:
            # napari's QtViewerDockWidget.inner_widget() (viewer.window.dock_widgets, a second menu click) returns
            # ``dock.widget()._magic_widget`` when present: the magicgui Container, as before the wrapping
            self._magic_widget = magic_widget

    def eventFilter(self, obj: QObject, event: QEvent) -> bool:  # Qt override
        """The form's layout changed (a row shown, a wider label; QScrollArea filters its widget's events): ask
        the dock to re-read the size hints, so a wider form widens the dock, as an unwrapped form did, instead of
        losing its right edge (this area never scrolls sideways, and a QScrollArea does not pass its widget's new
        minimum on by itself)."""
        form = self.widget()
        if event.type() == QEvent.Type.LayoutRequest and form is not None and obj is form:
            least = form.minimumSizeHint().width()
            # only when the width changed: a relayout of the window costs ~3 ms per status line otherwise
            if least != self._form_least_width:
                self._form_least_width = least
                self.updateGeometry()
        return super().eventFilter(obj, event)

    def changeEvent(self, event: QEvent) -> None:  # Qt override
        """Taken out of its dock (napari's close button: ``widget().setParent(None)``, then the area is freed):
        let go of the form first, so it outlives the area as it outlived the dock before the wrapping (the
        widget object lives on, e.g. in viewer callbacks, and a run may still be finishing)."""
        if event.type() == QEvent.Type.ParentChange and self.parent() is None and self.widget() is not None:
            form = self.takeWidget()
            form.setParent(None)  # through Python: shiboken drops its parent -> child reference to the form
            _tell(self._container, docked=False)
        super().changeEvent(event)

    def _extra(self) -> QSize:
        """What the area adds around its form: the scroll bar's width, and the frame that napari's style sheet
        draws even with ``NoFrame`` (1 px a side; without it a form as wide as the hint lost 2 px)."""
        m = self.contentsMargins()
        bar = int(self.verticalScrollBar().sizeHint().width())
        return QSize(bar + m.left() + m.right(), m.top() + m.bottom())

    def sizeHint(self) -> QSize:
        form = self.widget()
        hint = form.sizeHint() if form is not None else QSize(0, 0)
        return hint + self._extra()

    def minimumSizeHint(self) -> QSize:
        form = self.widget()
        least = form.minimumSizeHint() if form is not None else QSize(0, 0)
        extra = self._extra()
        return QSize(least.width() + extra.width(), min(least.height(), MIN_HEIGHT) + extra.height())


class _WheelScrolls(QObject):
    """Event filter on a form's value fields: the wheel over an unfocused one scrolls the dock instead."""

    def __init__(self, area: QScrollArea) -> None:
        super().__init__(area)
        self._bar = area.verticalScrollBar()

    def eventFilter(self, obj: QObject, event: QEvent) -> bool:  # Qt override
        if event.type() == QEvent.Type.Wheel and isinstance(obj, QWidget) and not obj.hasFocus():
            QApplication.sendEvent(self._bar, event)
            return True
        return False


def wrap_dock(dock: QDockWidget) -> None:
    """Put ``dock``'s widget in a :class:`DockScrollArea` (once; a dock already holding a scroll area, or none,
    is left as it is)."""
    form = dock.widget()
    if form is not None and not isinstance(form, QScrollArea):
        magic = getattr(form, "_magic_widget", None)
        dock.setWidget(DockScrollArea(form, magic))
        # A dock napari tabifies (add_plugin_dock_widget(tabify=True), as `pathdistill view` docks) is laid out
        # before this turn: its layout (SetMinAndMaxSize) pins the dock's minimum height at the unwrapped form's
        # (Embed: 709 px), and keeps it, since it counts the dock's own minimum in. Let it go: the layout then sets
        # the scroll area's (MIN_HEIGHT + title), as for a dock docked on its own.
        dock.setMinimumHeight(0)
        _tell(magic, docked=True)


class _DockWatcher(QObject):
    """Event filter on a form: when its parent becomes a dock, wraps that dock on the next event-loop turn
    (not inside ``QDockWidget.setWidget``, which is what sends the event)."""

    def eventFilter(self, obj: QObject, event: QEvent) -> bool:  # Qt override
        if event.type() == QEvent.Type.ParentChange and isinstance(obj, QWidget):
            dock = obj.parentWidget()
            if isinstance(dock, QDockWidget):
                QTimer.singleShot(0, dock, lambda: wrap_dock(dock))  # skipped if the dock is gone by then
        return False


def scroll_when_docked(container: Any) -> None:
    """Make a magicgui Container's dock scroll (see the module docstring); call once, from its ``__init__``."""
    form: QWidget = container.native
    watcher = _DockWatcher(form)  # parented to the form: lives and dies with it
    form.installEventFilter(watcher)


def on_dock_change(container: Any, callback: Any) -> None:
    """Call ``callback(docked)`` when napari docks ``container`` (True) or closes its dock (False: napari's close
    button or ``remove_dock_widget`` takes the form out; the widget object lives on while anything holds it,
    e.g. a viewer callback it registered, which this is the moment to remove). Needs :func:`scroll_when_docked`."""
    container.__dict__.setdefault("_dock_callbacks", []).append(callback)


def _tell(container: Any, docked: bool) -> None:
    for callback in getattr(container, "_dock_callbacks", ()):
        callback(docked)


#: napari's QAbstractSpinBox rules give a spin box without buttons a 1 px edit field; these make the buttons 0 px
_READOUT_STYLE = (
    "QAbstractSpinBox {background: transparent; border: 0; padding: 0px; min-width: 0px}"
    " QAbstractSpinBox::up-button, QAbstractSpinBox::down-button {width: 0px; border: 0px}"
    " QAbstractSpinBox::up-arrow, QAbstractSpinBox::down-arrow {image: none; width: 0px}"
)


def legible_readout(slider: Any) -> None:
    """Make a magicgui slider's value readout readable in a napari dock.

    magicgui's readout is a spin box with ``NoButtons``; under napari's style sheet (its up/down buttons are 20 px
    sub-controls placed in the margin) Qt then lays out its text field 1 px wide, so "0.60" shows as ":". With
    arrows "on" but styled to 0 px the field takes the whole box; wheel and keys change the value as before.
    """
    box = slider.native.findChild(QAbstractSpinBox)
    if box is not None:
        box.setButtonSymbols(QAbstractSpinBox.ButtonSymbols.UpDownArrows)
        box.setStyleSheet(_READOUT_STYLE)
