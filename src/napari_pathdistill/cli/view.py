"""``pathdistill view [SLIDE] [--sample]``: open napari with a slide (through our reader) and dock our widgets."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from napari_pathdistill.errors import PathDistillError

#: dock widgets opened by default (display names from napari.yaml); missing ones are skipped with a note
WIDGETS = (
    "Tissue and tile grid",
    "Embed slide",
    "Teacher vs student attention",
    "Cross-stain similarity",
    "Evaluate",
)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``view``."""
    p = subparsers.add_parser("view", help="open a slide in napari with the PathDistill widgets")
    p.add_argument("slide", nargs="?", type=Path, help="slide file or DICOM folder")
    p.add_argument(
        "--sample", action="store_true", help="open the bundled CMU-1-Small-Region sample (offline)"
    )
    p.add_argument("--associated", default="", help="also show associated images: 'label,macro' or 'all'")
    p.add_argument("--widgets", default=",".join(WIDGETS), help="comma-separated dock widgets ('' for none)")
    p.add_argument("--screenshot", type=Path, default=None, help="save a screenshot and exit (headless use)")
    p.set_defaults(func=run)


def _dock(viewer: object, names: list[str]) -> None:
    """Dock our widgets as tabs of one area (the canvas keeps its room); the first one is shown."""
    docks = []
    for i, name in enumerate(names):
        try:
            dock, _ = viewer.window.add_plugin_dock_widget("napari-pathdistill", name, tabify=i > 0)  # type: ignore[attr-defined]
            docks.append(dock)
        except Exception as exc:
            print(f"note: widget {name!r} not available: {exc}", file=sys.stderr)
    if docks:
        from qtpy.QtWidgets import QApplication

        QApplication.processEvents()  # let Qt build the tab bar first, else raise_() is ignored
        docks[0].raise_()


def run(args: argparse.Namespace) -> int:
    """Open the viewer; blocks in the Qt event loop unless ``--screenshot`` is given."""
    if args.slide is None and not args.sample:
        print("error: give a SLIDE path or --sample", file=sys.stderr)
        return 2
    if args.associated:
        os.environ["PATHDISTILL_ASSOCIATED"] = args.associated
    widgets = [n for n in args.widgets.split(",") if n.strip()]
    import napari

    viewer = napari.Viewer(title="PathDistill", show=True)
    viewer.window._qt_window.resize(1500, 950)
    try:
        if args.sample:
            viewer.open_sample("napari-pathdistill", "cmu_small_region")
        else:
            viewer.open(str(args.slide), plugin="napari-pathdistill")
    except (PathDistillError, Exception) as exc:
        cause = exc.__cause__ if isinstance(exc.__cause__, PathDistillError) else exc
        print(f"error: {cause}", file=sys.stderr)
        viewer.close()
        return 1
    _dock(viewer, widgets)
    viewer.scale_bar.visible = True
    viewer.reset_view()
    if args.screenshot is not None:
        from qtpy.QtWidgets import QApplication

        for _ in range(20):
            QApplication.processEvents()
        viewer.screenshot(str(args.screenshot), canvas_only=False, flash=False)
        print(f"wrote {args.screenshot}")
        viewer.close()
        return 0
    napari.run()
    return 0
