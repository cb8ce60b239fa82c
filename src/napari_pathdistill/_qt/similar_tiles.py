"""The "similar tiles" Points layer of a clicked tile, and which map layer a click hit (Embed widget helpers).

The points mark the query tile (a star) and its top-k most similar tiles of the same map by cosine
(``inference.similarity_map.most_similar``), placed on the clicked map layer wherever it sits, with faces on the
similarity heatmap's magma and contrast limits (``_qt.tile_search``), so one colour means one cosine.
"""

from __future__ import annotations

from typing import Any

import napari
import numpy as np

from napari_pathdistill._qt._layers import map_layers
from napari_pathdistill._qt._upsert import go_with_slide, upsert_layer
from napari_pathdistill._qt.tile_search import points_colormap
from napari_pathdistill.inference.similarity_map import most_similar
from napari_pathdistill.inference.slide_maps import SlideMap

NAME = "similar tiles"


def show_similar_tiles(
    viewer: napari.viewer.Viewer,
    smap: SlideMap,
    index: int,
    k: int,
    layer: Any,
    units: Any,
    limits: tuple[float, float],
) -> tuple[napari.layers.Points, np.ndarray]:
    """The query tile ``index`` of ``smap`` and its ``k`` most similar tiles as the "similar tiles" layer.

    Args:
        viewer: the viewer.
        smap: the map the tile belongs to.
        index: the query tile (row of the map's features).
        k: how many similar tiles.
        layer: the map layer clicked (the points go where it sits), or None (the map's own geometry).
        units: the points' units when ``layer`` is None.
        limits: the heatmap's contrast limits (the faces' too).

    Returns:
        The Points layer and the (k,) cosines of the similar tiles.
    """
    idx, cos = most_similar(smap, index, k)  # cached unit features (fast at 100k)
    placed = layer is not None
    scale, translate = (layer.scale[-2:], layer.translate[-2:]) if placed else (smap.scale, None)
    centers = smap.tile_centers(scale, translate)
    features = {
        "tile": np.r_[index, idx],
        "cosine": np.r_[1.0, cos],
        "query": np.r_[True, np.zeros(len(idx), bool)],
    }
    pts = np.concatenate([centers[[index]], centers[idx]])
    units = getattr(layer, "units", None) if placed else units
    points = _points(viewer, pts, features, float(min(scale)) * 0.6, units, limits)
    go_with_slide(viewer, layer, [points])  # they leave with the map they lie on (it with its slide)
    return points, cos


def _points(
    viewer: napari.viewer.Viewer,
    pts: np.ndarray,
    features: dict[str, np.ndarray],
    size: float,
    units: Any,
    limits: tuple[float, float],
) -> napari.layers.Points:
    """The "similar tiles" layer holding ``pts``: updated in place (removing a layer costs a napari gc pass)
    unless its units differ, else added; faces by cosine on the heatmap's magma and contrast limits."""
    symbols = ["star"] + ["disc"] * (len(pts) - 1)
    points = viewer.layers[NAME] if NAME in viewer.layers else None  # noqa: SIM401 (LayerList has no .get)
    if isinstance(points, napari.layers.Points) and tuple(points.units) == tuple(units or points.units):
        points.data, points.features, points.size, points.symbol = pts, features, size, symbols
        points.face_color = "cosine"
        points.face_contrast_limits = limits
        points.refresh()
        return points
    return upsert_layer(viewer, "points", pts, NAME, features=features, size=size,  # type: ignore[return-value]
                        face_color="cosine", symbol=symbols, units=units, face_colormap=points_colormap(),
                        face_contrast_limits=limits, border_color="white")  # fmt: skip


def recolour_similar_tiles(viewer: napari.viewer.Viewer, limits: tuple[float, float]) -> None:
    """The heatmap's contrast limits moved (its threshold): the similar-tiles faces follow them."""
    points = viewer.layers[NAME] if NAME in viewer.layers else None  # noqa: SIM401
    if isinstance(points, napari.layers.Points) and len(points.data):
        points.face_contrast_limits = limits
        points.refresh()


def map_layer_at(viewer: Any, position: Any) -> tuple[Any, int] | None:
    """(map layer, tile index) under a world position: the active map layer first, then the visible ones from the
    top; None off every map's tiles."""
    layers = map_layers(viewer)
    active = viewer.layers.selection.active
    order = [active] if active in layers else []
    order += [layer for layer in layers if layer.visible and layer is not active]
    for layer in order:
        row, col = layer.world_to_data(position)[-2:]
        index = layer.metadata["pathdistill"]["slide_map"].tile_at(row, col)
        if index is not None:
            return layer, index
    return None
