"""Add-or-update of the widgets' result layers, adding them without moving the user's selection, and their
removal with the slide layer they were computed on."""

from __future__ import annotations

import inspect
import weakref
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from functools import partial
from typing import Any

import napari
import numpy as np
from napari.layers import Image, Labels, Layer, Points
from qtpy.QtCore import QTimer

from napari_pathdistill._qt._layers import SlideRef

_KINDS: dict[str, type[Layer]] = {"image": Image, "labels": Labels, "points": Points}


@contextmanager
def added_unselected(viewer: napari.viewer.Viewer) -> Iterator[None]:
    """Layers added inside the block are not made active: the selection stays where the user left it.

    napari activates each inserted layer, which shows that layer's controls panel (a fresh Qt panel: 0.1-1 s
    on a busy 2-core CPU for the first layer of its kind) only for a caller that then re-selects the map layer.
    Uses napari's private ``SelectableEventedList._activate_on_insert``; without it, napari's default applies.
    """
    layers = viewer.layers
    before = getattr(layers, "_activate_on_insert", None)
    if before is None:
        yield
        return
    layers._activate_on_insert = False
    try:
        yield
    finally:
        layers._activate_on_insert = before


def keep_active(viewer: napari.viewer.Viewer, layer: Layer | None) -> None:
    """Make ``layer`` the active layer if it is still in the viewer and not active already (setting the active
    layer again emits a selection change, which re-shows the controls panel)."""
    if layer is not None and layer in viewer.layers and viewer.layers.selection.active is not layer:
        viewer.layers.selection.active = layer


def upsert_layer(viewer: napari.viewer.Viewer, kind: str, data: Any, name: str, **kwargs: Any) -> Layer:
    """Replace the layer called ``name`` (same kind) by a new one, or add it: re-runs do not pile up.

    Args:
        viewer: the viewer.
        kind: ``"image"``, ``"labels"`` or ``"points"``.
        data: layer data.
        name: layer name (results of a re-run replace the previous ones instead of piling up).
        **kwargs: layer properties (``scale``, ``translate``, ``features``, ``colormap``...).

    Returns:
        The layer.
    """
    if name in viewer.layers and isinstance(viewer.layers[name], _KINDS[kind]):
        viewer.layers.remove(name)
    add = {"image": viewer.add_image, "labels": viewer.add_labels, "points": viewer.add_points}[kind]
    return add(data, name=name, **kwargs)


def upsert_labels(viewer: napari.viewer.Viewer, data: np.ndarray, name: str, **kwargs: Any) -> Labels:
    """Update the Labels layer called ``name`` in place (data, then each property of ``kwargs``), or add it.

    In place keeps the layer's position and selection, and spares napari the gc pass of removing a layer
    (~0.7 s in a session holding large layers). ``kwargs`` are Labels properties (``scale``, ``translate``,
    ``features``, ``colormap``, ``metadata``, ``units``, ``opacity``...).
    """
    layer = viewer.layers[name] if name in viewer.layers else None  # noqa: SIM401 (LayerList has no .get)
    if not isinstance(layer, Labels) or layer.data.ndim != data.ndim:
        return upsert_layer(viewer, "labels", data, name, **kwargs)  # type: ignore[return-value]
    _update(layer, data, kwargs)
    return layer


def upsert_image(viewer: napari.viewer.Viewer, data: np.ndarray, name: str, **kwargs: Any) -> Image:
    """Update the single-scale Image layer called ``name`` in place (same ``rgb`` and dimensions), or add it:
    as :func:`upsert_labels`, a re-run spares napari a layer removal (a full gc pass) and a layer creation."""
    layer = viewer.layers[name] if name in viewer.layers else None  # noqa: SIM401 (LayerList has no .get)
    rgb = bool(kwargs.get("rgb", False))
    if (not isinstance(layer, Image) or layer.multiscale or bool(layer.rgb) != rgb
            or layer.data.ndim != data.ndim):  # fmt: skip
        return upsert_layer(viewer, "image", data, name, **kwargs)  # type: ignore[return-value]
    _update(layer, data, {k: v for k, v in kwargs.items() if k != "rgb"})
    return layer


def _update(layer: Layer, data: np.ndarray, props: dict[str, Any]) -> None:
    """Set a layer's data, then the properties that differ (geometry after data, so napari re-slices once per
    change; napari re-slices and re-emits on every set, equal or not: ~20 ms each on this CPU)."""
    layer.data = data
    for key, value in props.items():
        if (key == "units" and value is None) or _unchanged(layer, key, value):
            continue
        setattr(layer, key, value)


#: properties :func:`_update` compares before setting (arrays, units, numbers, colormaps: cheap and exact)
_COMPARED = ("scale", "translate", "contrast_limits", "units", "opacity", "colormap", "blending")


def _unchanged(layer: Layer, key: str, value: Any) -> bool:
    """Whether setting ``layer.<key> = value`` would change nothing (False when it cannot tell)."""
    if key not in _COMPARED:
        return False
    current = getattr(layer, key, None)
    if current is None:
        return False
    if key in ("scale", "translate", "contrast_limits"):
        return np.shape(current) == np.shape(value) and bool(np.allclose(current, value))
    if key == "units":  # pint units; names ("um") are set, napari converts them
        return tuple(current) == tuple(value)
    try:
        return bool(current == value)
    except (TypeError, ValueError):
        return False


#: (the result layers bound to a slide layer, weakly; a callable giving ``on_gone`` or None once it is freed)
_Bound = tuple[list["weakref.ref[Layer]"], Callable[[], Callable[[], Any] | None]]
#: slide layer -> what goes with it (held weakly: a slide layer removed and freed drops its entry)
_WITH_SLIDE: weakref.WeakKeyDictionary[Layer, list[_Bound]] = weakref.WeakKeyDictionary()


def go_with_slide(
    viewer: napari.viewer.Viewer,
    slide: Layer | SlideRef | None,
    layers: Iterable[Layer],
    on_gone: Callable[[], Any] | None = None,
) -> None:
    """Bind result ``layers`` to the slide layer they lie on: when ``slide`` leaves ``viewer``, those of them still
    there leave too, and then ``on_gone`` is called (e.g. to end a grid mode they were arranged in).

    The removal runs right after the slide's, on the Qt event loop: napari's "delete selected layers" is still
    iterating a selection that may hold some of these layers when it removes the slide. Layers are held weakly,
    and ``on_gone`` too when it is a bound method (a closed dock is freed; its results still go with the slide).
    A layer goes with one slide at a time: binding it again (the "similar tiles" points moved to another map)
    ends its earlier binding. ``slide`` may be a result layer itself (points on a map go with the map), or the
    :class:`SlideRef` of a run (its layer); nothing is bound when it is None or no longer in ``viewer``.
    """
    if isinstance(slide, SlideRef):
        slide = slide.layer(viewer)
    if slide is None or slide not in viewer.layers:
        return
    if on_gone is None:
        gone: Callable[[], Callable[[], Any] | None] = lambda: None  # noqa: E731
    elif inspect.ismethod(on_gone):
        gone = weakref.WeakMethod(on_gone)
    else:
        gone = lambda: on_gone  # noqa: E731
    layers = list(layers)
    _unbind({id(layer) for layer in layers})
    _WITH_SLIDE[slide] = [*_WITH_SLIDE.get(slide, []), ([weakref.ref(layer) for layer in layers], gone)]
    viewer.layers.events.removed.connect(_slide_left)  # once per viewer: napari ignores a second connect


def _unbind(ids: set[int]) -> None:
    """Drop the bindings of the layers of these ``id``s, and of layers already freed, from every slide."""
    for slide in list(_WITH_SLIDE.keys()):
        kept = []
        for refs, gone in _WITH_SLIDE.get(slide, []):
            alive = [ref for ref in refs if (layer := ref()) is not None and id(layer) not in ids]
            if alive:
                kept.append((alive, gone))
        _WITH_SLIDE[slide] = kept


def _slide_left(event: Any) -> None:
    """A layer left a viewer's layer list (``event.source``): if results are bound to it, remove them next."""
    bound = _WITH_SLIDE.pop(event.value, None)
    if bound:
        QTimer.singleShot(0, partial(_remove_bound, weakref.ref(event.source), bound))


def _remove_bound(layers_ref: weakref.ref[Any], bound: list[_Bound]) -> None:
    layers = layers_ref()
    if layers is None:
        return
    for refs, gone in bound:
        present = [layer for layer in (ref() for ref in refs) if layer is not None and layer in layers]
        for layer in present:
            layers.remove(layer)
        callback = gone() if present else None  # results a re-run has replaced already end nothing
        if callback is not None:
            callback()
