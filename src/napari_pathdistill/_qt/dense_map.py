"""Show a dense patch-token map (``inference.dense_maps.DenseMap``) as an RGBA image layer aligned with its slide.

Signature (main thread, e.g. the Embed widget's TaskRunner callback for its "patch tokens (ViT)" map)::

    show_dense_map(viewer: napari.viewer.Viewer, result: DenseMap, name: str, units: Any = None,
                   placement: tuple[scale, translate] | None = None)
        -> napari.layers.Image   # layer "<name> patch-token map"

``name`` is the slide layer's name and ``units`` its ``layer.units`` (um from our reader): the map's
``scale``/``translate`` are in those units, like the tile-level embedding map's, on the slide as our reader opens
it; ``placement`` puts it on a slide layer that was moved or scaled since (``_qt._layers.SlideRef.place``).

The layer is a :class:`DenseMapLayer` (an RGB ``Image`` to napari: controls, saving, duplicating): hovering it
names, after the RGBA value, the tile under the cursor (level-0 x, y), the patch within it and the cell's
3 PCA scores (:func:`hover_text`). Its ``metadata["pathdistill"]`` holds the map (``dense_map``), the slide layer's
name (``slide_layer``) and what it was computed from under a feature file's attr names (``slide_path``, ``model``,
``weights``, ``tile_px``, ``mpp``, ``min_tissue``, ``stride_px``: ``DenseMap.attrs``), as the clusters layer of a
tile-level map holds its ``slide_map``, ``model`` and ``slide_layer``.
"""

from __future__ import annotations

from typing import Any

import napari
import numpy as np

from napari_pathdistill._qt._upsert import go_with_slide
from napari_pathdistill.inference.dense_maps import DenseMap

#: suffix of the layer name after the slide layer's name
LAYER_SUFFIX = "patch-token map"


def hover_text(result: DenseMap, row: float, col: float) -> str:
    """What is under raster position (``row``, ``col``) (napari data coordinates): the tile's level-0 top-left, the
    patch (row, col) within it, the cell's 3 PCA scores and, where tiles overlap, how many were averaged; "" off
    the map's cells."""
    hit = result.patch_at(row, col)
    if hit is None:
        return ""
    i, pr, pc = hit
    (x, y), (gh, gw) = result.grid.coords[i], result.patch_grid
    r, c = int(np.floor(row + 0.5)), int(np.floor(col + 0.5))
    pcs = ", ".join(f"pc{k + 1}: {v:.3g}" for k, v in enumerate(result.scores[r, c]))
    n = int(result.counts[r, c])
    mean = f" (mean of {n} tiles)" if n > 1 else ""
    return f"tile x: {int(x)}, y: {int(y)}; patch: row {pr}, col {pc} of {gh} x {gw}; {pcs}{mean}"


class DenseMapLayer(napari.layers.Image):
    """The RGBA image of a dense map whose status (and tooltip) says what is under the cursor: :func:`hover_text`
    of the ``DenseMap`` in ``metadata["pathdistill"]["dense_map"]``. napari treats it as an ``Image``."""

    @property
    def _type_string(self) -> str:
        return "image"  # napari's writers, layer-list icons and duplicates: an image layer

    def _hover(self, position: Any, world: bool) -> str:
        meta = self.metadata.get("pathdistill") if isinstance(self.metadata, dict) else None
        result = meta.get("dense_map") if isinstance(meta, dict) else None
        if position is None or not isinstance(result, DenseMap):
            return ""
        data = self.world_to_data(position) if world else np.asarray(position, float)
        return hover_text(result, *np.asarray(data, float)[-2:])

    def get_status(
        self,
        position: Any = None,
        *,
        view_direction: Any = None,
        dims_displayed: list[int] | None = None,
        world: bool = False,
        value: Any = None,
    ) -> dict[str, str]:
        """napari's status of an image (coordinates, RGBA value), then :func:`hover_text`."""
        status = super().get_status(position, view_direction=view_direction, dims_displayed=dims_displayed,
                                    world=world, value=value)  # fmt: skip
        text = self._hover(position, world)
        if text:
            status["coordinates"] += "; " + text
            status["value"] += "; " + text
        return status

    def _get_tooltip_text(
        self,
        position: Any,
        *,
        view_direction: Any = None,
        dims_displayed: list[int] | None = None,
        world: bool = False,
    ) -> str:
        return self._hover(position, world)


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
    meta = {"pathdistill": {**result.attrs, "model": result.model_name, "dense_map": result, "slide_layer": name,
                            "patch_grid": result.patch_grid, "stride_cells": result.stride_cells}}  # fmt: skip
    layer = viewer.layers[layer_name] if layer_name in viewer.layers else None  # noqa: SIM401 (LayerList has no .get)
    if layer is not None and not isinstance(layer, DenseMapLayer):
        viewer.layers.remove(layer)
        layer = None
    if layer is None:
        kwargs = {"units": units} if units is not None else {}
        layer = viewer.add_layer(DenseMapLayer(rgba, name=layer_name, rgb=True, scale=scale, translate=translate,
                                               opacity=0.7, metadata=meta, **kwargs))  # fmt: skip
    else:
        layer.data = rgba  # in place: removing a layer costs napari a gc pass and loses the user's settings
        layer.scale, layer.translate = scale, translate
        if units is not None:
            layer.units = units
        layer.metadata = {**layer.metadata, **meta}
        layer.refresh()
    go_with_slide(viewer, slide, [layer])
    return layer
