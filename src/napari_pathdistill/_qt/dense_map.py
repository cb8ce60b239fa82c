"""Show a dense patch-token map (``inference.dense_maps.DenseMap``) as an RGBA image layer aligned with its slide.

Signature (main thread, e.g. the Embed widget's TaskRunner callback for its "patch tokens (ViT)" map)::

    show_dense_map(viewer: napari.viewer.Viewer, result: DenseMap, name: str, units: Any = None,
                   placement: tuple[scale, translate] | None = None)
        -> napari.layers.Image   # layer "<name> patch-token map"

``name`` is the slide layer's name and ``units`` its ``layer.units`` (um from our reader): the map's
``scale``/``translate`` are in those units, like the tile-level embedding map's, on the slide as our reader opens
it; ``placement`` puts it on a slide layer that was moved or scaled since (``_qt._layers.SlideRef.place``).
"""

from __future__ import annotations

from typing import Any

import napari
import numpy as np

from napari_pathdistill._qt._upsert import go_with_slide
from napari_pathdistill.inference.dense_maps import DenseMap

#: suffix of the layer name after the slide layer's name
LAYER_SUFFIX = "patch-token map"


def dense_rgba(result: DenseMap) -> np.ndarray:
    """(H, W, 4) uint8: the map's colours, alpha 255 on tissue cells and 0 elsewhere (slide shows through)."""
    return np.dstack([result.rgb, result.valid.astype(np.uint8) * 255])


def show_dense_map(
    viewer: napari.viewer.Viewer,
    result: DenseMap,
    name: str,
    units: Any = None,
    placement: tuple[Any, Any] | None = None,
    slide: napari.layers.Layer | None = None,
) -> napari.layers.Image:
    """Add the RGBA layer ``"<name> patch-token map"``, or update that layer in place (same layer object).

    Args:
        viewer: the viewer.
        result: the map from ``iter_dense_map``.
        name: the slide layer's name.
        units: the slide layer's units (``layer.units``), so the map renders in the same world units.
        placement: (scale, translate) of the map on its slide layer (default: the result's own, right for a
            slide layer left where our reader put it).
        slide: the slide layer: the map leaves the viewer with it (``_qt._upsert.go_with_slide``).

    Returns:
        The image layer.
    """
    scale, translate = placement if placement is not None else (result.scale, result.translate)
    layer_name = f"{name} {LAYER_SUFFIX}"
    rgba = dense_rgba(result)
    meta = {"pathdistill": {"model": result.model_name, "patch_grid": result.patch_grid,
                            "stride_cells": result.stride_cells}}  # fmt: skip
    layer = viewer.layers[layer_name] if layer_name in viewer.layers else None  # noqa: SIM401 (LayerList has no .get)
    if layer is not None and not (isinstance(layer, napari.layers.Image) and layer.rgb):
        viewer.layers.remove(layer)
        layer = None
    if layer is None:
        kwargs = {"units": units} if units is not None else {}
        layer = viewer.add_image(rgba, name=layer_name, rgb=True, scale=scale, translate=translate, opacity=0.7,
                                 metadata=meta, **kwargs)  # fmt: skip
    else:
        layer.data = rgba  # in place: removing a layer costs napari a gc pass and loses the user's settings
        layer.scale, layer.translate = scale, translate
        if units is not None:
            layer.units = units
        layer.metadata = {**layer.metadata, **meta}
        layer.refresh()
    go_with_slide(viewer, slide, [layer])
    return layer
