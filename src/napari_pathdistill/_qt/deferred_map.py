"""The feature-file reader's map of a large file computed off napari's main thread.

napari calls a reader on its main thread and adds the layers it returns. A CLAM / TRIDENT file stores no map: its
rows (100,000 x 1,536 float32: 600 MB) must be read and get their PCA and k-means, seconds of work that froze the
window. For such a file :func:`placeholder_layers` returns the two map layers at once, named and placed (scale,
translate, units) from the file's coords and attrs alone: the map a grey raster of the tiles, the clusters empty.
Once napari has added them, a worker thread (``GeneratorWorker``) reads the rows and computes the map with the
same functions as the synchronous reader (``_qt._clusters.map_layer_data``), with a progress bar in napari's
activity panel and a line in the status bar; its result fills the layers in place on the main thread (data,
scale, translate, features, colormap, metadata: what the synchronous reader creates them with). The layers are
found by a token in their metadata: removed meanwhile, the result is dropped (and the worker stops after its
current step); closing the window cancels it as the widgets' tasks are. The worker's warnings (rows with NaN /
inf left out, no um/px) become notifications, and an error one notification that removes the grey placeholders.
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from napari_pathdistill.errors import Cancelled
from napari_pathdistill.progress import cancel_scope, raise_if_cancelled

#: a file of fewer rows (and any of ours, which stores its map) is read on the main thread: a fraction of a second
DEFER_MIN_ROWS = 4096
#: the worker's steps, as the progress bar counts them
STEPS = ("reading the features", "PCA and k-means", "rasterising the map")
#: maps waiting for their layers or being computed, by token (the registry keeps them alive: napari holds the
#: methods connected to its events weakly)
_MAPS: dict[str, DeferredMap] = {}


def can_defer() -> bool:
    """Whether the caller is napari's main thread with a current viewer (where a reader may leave work to a
    worker whose result reaches the main thread through Qt's event loop)."""
    if threading.current_thread() is not threading.main_thread():
        return False
    try:
        import napari
        from qtpy.QtWidgets import QApplication
    except Exception:
        return False
    return QApplication.instance() is not None and napari.current_viewer() is not None


def worth_deferring(ff: Any) -> bool:
    """A feature file (read without its rows) whose map takes seconds: no stored map and many rows."""
    return ff.summary is None and len(ff.coords) >= DEFER_MIN_ROWS


def placeholder_layers(
    ff: Any, slide_mpp: float | None, name: str, meta: dict[str, Any], units: dict[str, Any]
) -> list[tuple[Any, dict[str, Any], str]]:
    """The reader's two map layers of ``ff`` (read without its rows), to be filled by a worker once added.

    Args:
        ff: the :class:`~napari_pathdistill.inference.feature_files.FeatureFile`, ``features=False``.
        slide_mpp: the um/px the map is placed at (as ``slide_map_from_features`` takes it).
        name: the layers' name stem ("<name> embedding map", "<name> clusters").
        meta: the clusters layer's ``metadata["pathdistill"]`` less ``slide_map`` and ``model``.
        units: ``{"units": ...}`` or nothing, as the synchronous layers have.
    """
    import napari

    from napari_pathdistill._qt._clusters import cluster_colormap
    from napari_pathdistill.inference.feature_files import feature_grid
    from napari_pathdistill.wsi.tiling import grid_to_image

    grey = np.tile(np.array([0.5, 0.5, 0.5, 1.0], np.float32), (len(ff.coords), 1))
    raster, scale, translate = grid_to_image(feature_grid(ff, slide_mpp), grey, fill=0.0)
    job = DeferredMap(napari.current_viewer(), ff.path, slide_mpp, name, meta, units, len(ff.coords))
    tag = {"pathdistill": {"pending": job.token}}
    place = {"scale": scale, "translate": translate, **units}
    image_kw = {"name": f"{name} embedding map", "rgb": True, "opacity": 0.6, "metadata": tag, **place}
    labels_kw = {"name": f"{name} clusters", "opacity": 0.5, "colormap": cluster_colormap(6),
                 "metadata": {"pathdistill": {**meta, "pending": job.token}}, **place}  # fmt: skip
    return [(raster, image_kw, "image"), (np.zeros(raster.shape[:2], np.int32), labels_kw, "labels")]


@dataclass
class _Result:
    """The worker's result: the synchronous reader's layer data of the file's map."""

    layer_data: list[tuple[Any, dict[str, Any], str]]


def _compute(path: Path, slide_mpp: float | None, name: str, meta: dict[str, Any], units: dict[str, Any],
             cancel: threading.Event) -> Iterator[str | _Result]:  # fmt: skip
    """Worker: read the rows, PCA + k-means, the layers' data; yields each step's name, then the result.

    Cancelled (layers removed, window closed), it stops within a step: the row reads, PCA and k-means check
    ``cancel`` between their blocks and iterations (``progress.cancel_scope``), so closing the window no longer
    waits for seconds of numerical work whose result nobody will see."""
    from napari_pathdistill._qt._clusters import map_layer_data
    from napari_pathdistill.inference.feature_files import read_feature_file, slide_map_from_features

    def step(what: str) -> contextlib.AbstractContextManager[None]:
        raise_if_cancelled(cancel, f"{path.name}: embedding map cancelled")
        return cancel_scope(cancel, f"{path.name}: embedding map cancelled while {what}")

    try:
        yield STEPS[0]
        with step(STEPS[0]):
            ff = read_feature_file(path)
        yield STEPS[1]
        with step(STEPS[1]):
            smap = slide_map_from_features(ff, slide_mpp=slide_mpp)
        yield STEPS[2]
        with step(STEPS[2]):
            data = map_layer_data(smap, name, {"slide_map": smap, "model": smap.model_name, **meta}, units)
        yield _Result(data)
    except Cancelled:  # nothing to show: the layers are gone or the window is closing
        return


class DeferredMap:
    """One file's map: waits for its placeholder layers to be added, computes in a worker, fills them."""

    def __init__(self, viewer: Any, path: Path, slide_mpp: float | None, name: str, meta: dict[str, Any],
                 units: dict[str, Any], rows: int) -> None:  # fmt: skip
        self.token = uuid.uuid4().hex
        self.viewer_ref = weakref.ref(viewer)
        self.args = (path, slide_mpp, name, meta, units)
        self.path, self.rows = path, rows
        self.cancel, self.ended = threading.Event(), threading.Event()
        self.worker: Any = None
        self.scheduled = False  # its layers are in the viewer: the worker starts (or has started)
        self.result: _Result | None = None
        self.bar: Any = None
        self.task: Any = None
        _MAPS[self.token] = self
        # napari's open() of a viewer other than the current one adds the layers there: every viewer is watched
        from napari import Viewer

        self.watched = [weakref.ref(v) for v in {viewer, *Viewer._instances}]
        for ref in self.watched:
            ref().layers.events.inserted.connect(self._on_inserted)  # type: ignore[union-attr]

    def layers(self) -> list[Any]:
        """This map's layers still in the viewer (image first)."""
        viewer = self.viewer_ref()
        found = [] if viewer is None else [ly for ly in viewer.layers if _token(ly) == self.token]
        return sorted(found, key=lambda ly: ly._type_string != "image")

    def _on_inserted(self, event: Any) -> None:
        if _token(event.value) == self.token and event.value._type_string == "labels":  # the last one
            viewers = [v for v in (ref() for ref in self.watched) if v is not None]
            for v in viewers:
                v.layers.events.inserted.disconnect(self._on_inserted)
            self.viewer_ref = weakref.ref(next(v for v in viewers if event.value in v.layers))
            self.scheduled = True
            from qtpy.QtCore import QTimer

            QTimer.singleShot(0, self.start)  # once napari's open() has returned

    def start(self) -> None:
        """Start the worker (the layers are in the viewer)."""
        from napari.qt.threading import GeneratorWorker
        from napari.utils import progress

        from napari_pathdistill._qt._task_warnings import WarningRelay
        from napari_pathdistill._qt._workers import _drive, _WindowTask

        viewer = self.viewer_ref()
        if viewer is None or not self.layers():
            _MAPS.pop(self.token, None)
            return
        what = f"{self.path.name}: embedding map"
        self.bar = progress(total=len(STEPS), desc=f"{what}: {STEPS[0]}")
        window = getattr(viewer, "window", None)
        if hasattr(window, "_register_task_status"):
            self.task = _WindowTask(window, what, self.cancel, self.ended)
        self.worker = GeneratorWorker(
            _drive, lambda cancel: _compute(*self.args, cancel), self.cancel, self.ended
        )
        self.worker.yielded.connect(self._on_yielded)
        self.worker.errored.connect(self._on_error)
        # napari 0.9.2's GeneratorWorker relays neither warnings nor errors under PySide6 (QRunnable's __init__
        # does not chain to its notifying mixin): ours, for the reader's warnings and a clear error
        self.worker.warned.connect(WarningRelay(what))
        self.worker.finished.connect(self._on_finished)
        viewer.layers.events.removed.connect(self._on_removed)
        viewer.status = f"{what}: computing it for {self.rows:,} tiles in the background..."
        self.worker.start()

    def _on_yielded(self, item: Any) -> None:
        if isinstance(item, _Result):
            self.result = item
        elif self.bar is not None and item in STEPS:
            self.bar.set_description(f"{self.path.name}: embedding map: {item}")
            self.bar.n = STEPS.index(item)
            self.bar.refresh()

    def _on_removed(self, _event: Any = None) -> None:
        if not self.layers():  # nothing left to fill: stop after the current step
            self.cancel.set()

    def _on_error(self, exc: BaseException) -> None:
        """A notification says why; the grey placeholders, which would pass for a map, are removed."""
        from napari.utils.notifications import show_error

        from napari_pathdistill._qt._workers import error_message

        viewer = self.viewer_ref()
        if viewer is None or (self.task is not None and self.task.closed):
            return
        show_error(error_message(exc, f"{self.path.name}: embedding map"))
        for layer in self.layers():
            viewer.layers.remove(layer)
        viewer.status = f"{self.path.name}: no embedding map (see the notification)"

    def _on_finished(self) -> None:
        from napari_pathdistill._qt._workers import _disconnect

        _MAPS.pop(self.token, None)
        _disconnect(self.worker)  # Qt's hold on this object (and, through it, the map's result)
        if self.bar is not None:
            with contextlib.suppress(RuntimeError):  # its Qt bar may be gone with a closed window
                self.bar.close()
        viewer, result, self.result = self.viewer_ref(), self.result, None
        state = "cancelled" if self.cancel.is_set() else "completed" if result else "failed"
        if self.task is not None:
            self.task.update(state, f"{self.path.name}: embedding map")
            if self.task.closed:  # the window is going
                return
        if viewer is None:
            return
        viewer.layers.events.removed.disconnect(self._on_removed)
        if result is not None and not self.cancel.is_set():
            _fill(self.layers(), result.layer_data)
            viewer.status = f"{self.path.name}: embedding map ready ({self.rows:,} tiles)"


def _token(layer: Any) -> str | None:
    meta = layer.metadata.get("pathdistill") if isinstance(layer.metadata, dict) else None
    return meta.get("pending") if isinstance(meta, dict) else None


def _fill(layers: list[Any], layer_data: list[tuple[Any, dict[str, Any], str]]) -> None:
    """Give each placeholder layer the data and attributes the synchronous reader creates its layer with."""
    for data, kw, kind in layer_data:
        layer = next((ly for ly in layers if ly._type_string == kind), None)
        if layer is None:  # removed by the user meanwhile
            continue
        # each set redraws the layer (~0.05-0.1 s for 100k tiles): only what differs from the placeholder's
        if kind == "labels":
            if not np.array_equal(layer.colormap.colors, kw["colormap"].colors):
                layer.colormap = kw["colormap"]
            layer.features = kw["features"]
        for attr in ("scale", "translate"):  # the same unless rows with NaN / inf features moved the lattice
            if not np.array_equal(getattr(layer, attr), kw[attr]):
                setattr(layer, attr, kw[attr])
        layer.data = data
        layer.metadata = kw.get("metadata", {})  # the map's metadata (an event: the tile search lists it)


def wait_for_maps(timeout: float = 300.0) -> bool:
    """Run Qt's event loop until every map whose layers were added is filled (``pathdistill view --screenshot``,
    tests, benchmarks). A ``QEventLoop`` that sleeps between events: a loop of ``processEvents`` and short
    sleeps took the GIL from the worker often enough to make it 1.5-2x slower.

    Returns:
        Whether none is still being computed.
    """
    from qtpy.QtCore import QEventLoop, QTimer

    def busy() -> bool:
        return any(m.scheduled for m in _MAPS.values())

    deadline = time.monotonic() + timeout
    if busy():
        loop, check = QEventLoop(), QTimer()
        check.timeout.connect(lambda: None if busy() and time.monotonic() < deadline else loop.quit())
        check.start(50)
        loop.exec()
        check.stop()
    return not busy()
