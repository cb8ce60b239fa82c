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
    """(k + 1, 4) RGBA: transparent for 0, then napari's label colours for clusters 1..k."""
    from napari.utils.colormaps import label_colormap

    return np.asarray(label_colormap(max(k, 1) + 1).map(np.arange(k + 1)), dtype=np.float32)


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
