"""The clusters layer of an embedding map: label raster, hover table and colours of a
:class:`~napari_pathdistill.inference.slide_maps.SlideMap` (napari only, no torch: the feature-file reader uses it).

Each tile's label is ``tile * K + cluster`` (``SlideMap.cluster_labels``): napari's hover shows that tile's row of
the features table, and a :class:`~napari.utils.colormaps.CyclicLabelColormap` of K colours gives every tile its
cluster's colour, computed on the GPU texture by a modulo; the layer costs the same at 100 or 100,000 tiles.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def cluster_palette(k: int) -> np.ndarray:
    """(k + 1, 4) float32 RGBA: transparent for 0, then the colours of clusters 1..k, those of the QuPath export
    too (``inference.palette.cluster_rgb``)."""
    from napari_pathdistill.inference.palette import cluster_rgb

    rgba = np.zeros((k + 1, 4), np.float32)
    rgba[1:, :3], rgba[1:, 3] = cluster_rgb(k), 1.0
    return rgba


def cluster_colormap(k: int) -> Any:
    """A cyclic label colormap of the K cluster colours: label ``i * K + c`` is drawn in cluster c's colour."""
    from napari.utils.colormaps import CyclicLabelColormap

    colors = cluster_palette(k)
    colors[0] = 0.0  # background (label 0) transparent
    return CyclicLabelColormap(colors=colors, background_value=0)


def clusters_layer(smap: Any) -> tuple[np.ndarray, dict[str, Any]]:
    """(data, kwargs) of the clusters Labels layer of ``smap``: label raster, ``features``, ``colormap``."""
    return smap.cluster_label_image(), {
        "features": smap.feature_table(),
        "colormap": cluster_colormap(smap.n_clusters),
    }


def warm_labels_layer() -> None:
    """Build (and drop) a 1 x 1 clusters-style Labels layer: its first construction in a session imports pandas
    and napari's numba label code (~0.35-0.75 s here). The Embed widget calls it when its dock opens, so that
    this is not paid on the main thread when the clusters layer of a finished run appears."""
    import napari

    napari.layers.Labels(np.ones((1, 1), np.int32), colormap=cluster_colormap(1),
                         features={"index": np.arange(2)})  # fmt: skip


def add_empty_map_layers(
    viewer: Any, slide_name: str, placement: tuple[Any, Any, Any], units: Any, k: int, model: str
) -> tuple[np.ndarray | None, list[Any]]:
    """Add the "<slide> embedding map" and "<slide> clusters" layers of a run, empty, where they do not exist yet.

    The Embed widget calls it when Embed is pressed: napari's creation of a layer (its controls, its vispy
    visual, the Labels tool overlays) holds the main thread for 0.1-0.4 s each, which at the press is the
    button's response, and during the run would freeze the canvas the user pans. The run then fills the layers
    in place.

    Args:
        viewer: the viewer.
        slide_name: name of the slide layer the run embeds.
        placement: ((rows, cols), scale, translate) of the map raster (``inference.live_map.map_placement``).
        units: the slide layer's units (None: napari's default).
        k: clusters of the run (the colormap's size).
        model: model name, for the map layer's metadata.

    Returns:
        (the (rows, cols, 4) float32 RGBA raster of a new map layer, or None if it existed, the layers added).
    """
    shape, scale, translate = placement
    geo: dict[str, Any] = {"scale": scale, "translate": translate}
    if units is not None:
        geo["units"] = units
    raster, added = None, []
    name = f"{slide_name} embedding map"
    if name not in viewer.layers:
        raster = np.zeros((*shape, 4), np.float32)
        added.append(viewer.add_image(raster, name=name, rgb=True, opacity=0.7, contrast_limits=(0, 1),
                                      metadata={"pathdistill": {"model": model}}, **geo))  # fmt: skip
    name = f"{slide_name} clusters"
    if name not in viewer.layers:
        added.append(viewer.add_labels(np.zeros(shape, np.int32), name=name, opacity=0.5,
                                       colormap=cluster_colormap(k), **geo))  # fmt: skip
    return raster, added


def remove_unfilled(viewer: Any, layers: list[Any]) -> None:
    """Remove those of ``layers`` (from :func:`add_empty_map_layers`) that a cancelled or failed run left empty."""
    for layer in layers:
        if layer in viewer.layers and not np.any(layer.data):
            viewer.layers.remove(layer)


def legend_html(clusters: np.ndarray) -> str:
    """Rich-text legend of a map's clusters: one coloured square and tile count per cluster id (1..k)."""
    ids, counts = np.unique(clusters, return_counts=True)
    palette = cluster_palette(int(ids.max()))
    rows = []
    for i, n in zip(ids, counts, strict=True):
        r, g, b, _ = np.round(palette[int(i)] * 255).astype(int)  # as the GeoJSON export's colours
        rows.append(f"<span style='color:#{r:02x}{g:02x}{b:02x}'>&#9632;</span> cluster {i}: {n} tiles")
    return "<br>".join(rows)


def map_layer_data(
    smap: Any, name: str, meta: dict[str, Any], units: dict[str, Any]
) -> list[tuple[Any, dict[str, Any], str]]:
    """The "<name> embedding map" (RGBA) and "<name> clusters" (Labels) layer data of a slide map (the feature
    reader's, synchronous or filled by ``_qt.deferred_map``)."""
    place = {"scale": smap.scale, "translate": smap.translate, **units}
    colours = np.ones((len(smap.rgb), 4), np.float32)  # (N, 4) RGBA, filled in place: no float64 copy
    colours[:, :3] = smap.rgb
    rgba = smap.raster(colours, fill=0.0)  # alpha 0: no tile
    image_kw = {"name": f"{name} embedding map", "rgb": True, "opacity": 0.6, **place}
    data, kw = clusters_layer(smap)  # tile * K + cluster: hover finds the tile, a K-colour cyclic colormap
    labels_kw = {"name": f"{name} clusters", "opacity": 0.5, "metadata": {"pathdistill": meta}, **kw, **place}
    return [(rgba, image_kw, "image"), (data, labels_kw, "labels")]
