"""The Embed widget's map layers: the "<slide> embedding map" raster painted in place while the model runs, then
the final PCA colours and the "<slide> clusters" labels of a finished :class:`SlideMap`.

All on the main thread; placed on the slide layer of the run (``_qt._layers.SlideRef``) wherever it sits, and
removed with it (``_qt._upsert.go_with_slide``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import napari
import numpy as np

from napari_pathdistill._qt._clusters import add_empty_map_layers, clusters_layer
from napari_pathdistill._qt._layers import SlideRef
from napari_pathdistill._qt._upsert import go_with_slide, upsert_image, upsert_labels
from napari_pathdistill.inference.live_map import PartialMap, map_placement
from napari_pathdistill.inference.slide_maps import SlideMap


class MapPainter:
    """The live raster of the run in flight and the layers it paints.

    Args:
        viewer: the napari viewer.
    """

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        self.viewer = viewer
        self.live: np.ndarray | None = None  # (rows, cols, 4) float32 raster painted while embedding

    def add_layers(
        self, path: Path, slide: SlideRef, tiling: tuple[int, float, float | None], k: int, model: str
    ) -> list[Any]:
        """The run's map layers, empty, now (``_qt._clusters.add_empty_map_layers``), on the slide layer wherever
        it sits; none if the slide's geometry cannot be read (the run reports why). ``tiling``: tile px, um/px,
        slide um/px override."""
        try:
            shape, scale, translate = map_placement(path, *tiling)
        except Exception:
            return []
        placement = (shape, *slide.place(scale, translate, self.viewer))
        raster, added = add_empty_map_layers(self.viewer, slide.name, placement, slide.units, k, model)
        self.live = raster if raster is not None else self.live
        go_with_slide(self.viewer, slide, added)
        return added

    def paint(
        self, part: PartialMap, source: tuple[str, Any], slide: SlideRef | None, model: str
    ) -> napari.layers.Image | None:
        """Paint the tiles of ``part`` into the "<slide> embedding map" layer (created once, then updated in
        place: one (rows, cols, 4) raster, only the new cells written), placed on ``slide`` (default: the layer
        named ``source[0]``). Nothing once that slide layer has left the viewer (its map left with it; the run
        goes on into the feature cache): a new map there would lie over nothing and stay."""
        if slide is not None and slide.layer(self.viewer) is None:
            return None
        name = f"{source[0]} embedding map"
        layer = self.viewer.layers[name] if name in self.viewer.layers else None  # noqa: SIM401
        raster = self.live
        if raster is None or raster.shape[:2] != part.shape or layer is None or layer.data is not raster:
            raster = self.live = np.zeros((*part.shape, 4), np.float32)
            scale, translate = self.place(part.scale, part.translate, slide or self.slide_named(source[0]))
            layer = upsert_image(self.viewer, raster, name, rgb=True, scale=scale, translate=translate,
                                 units=source[1], opacity=0.7, contrast_limits=(0, 1),
                                 metadata={"pathdistill": {"model": model}})  # fmt: skip
            go_with_slide(self.viewer, slide or self.slide_named(source[0]), [layer])
        rr, cc = part.cells[:, 0], part.cells[:, 1]
        raster[rr, cc, :3] = part.rgb
        raster[rr, cc, 3] = 1.0
        repaint(layer)
        return layer

    def show(self, result: SlideMap, source: tuple[str, Any], slide: SlideRef | None) -> napari.layers.Labels:
        """The finished map: its PCA colours (into the live raster when it is shown) and its clusters layer
        (label raster with the features table: hover finds the tile's row; colours by cluster)."""
        name, units = source
        scale, translate = self.place(result.scale, result.translate, slide or self.slide_named(name))
        geo = {"scale": scale, "translate": translate, "units": units}
        self._show_rgb(result, f"{name} embedding map", geo)
        meta = {"slide_map": result, "model": result.model_name, "slide_layer": name,
                "features_file": None if result.features_file is None else str(result.features_file)}  # fmt: skip
        data, kw = clusters_layer(result)
        labels = upsert_labels(self.viewer, data, f"{name} clusters", opacity=0.5, metadata={"pathdistill": meta},
                               **kw, **geo)  # fmt: skip
        go_with_slide(
            self.viewer,
            slide or self.slide_named(name),
            [labels, self.viewer.layers[f"{name} embedding map"]],
        )
        return labels

    def _show_rgb(self, result: SlideMap, name: str, geo: dict[str, Any]) -> None:
        """The final PCA colours (refitted on every tile): into the live raster in place, else into the layer of
        that name (a re-run, a cache hit), else a new layer."""
        rgba = np.concatenate([result.raster(result.rgb), (result.index_image > 0)[..., None]], axis=-1)
        live = self.viewer.layers[name] if name in self.viewer.layers else None  # noqa: SIM401
        raster = self.live
        if live is not None and raster is not None and live.data is raster and rgba.shape == raster.shape:
            raster[:] = rgba
            repaint(live)
            return
        upsert_image(self.viewer, rgba.astype(np.float32), name, rgb=True, **geo, opacity=0.7,
                     contrast_limits=(0, 1), metadata={"pathdistill": {"model": result.model_name}})  # fmt: skip

    def slide_named(self, name: str) -> SlideRef | None:
        """The image layer called ``name`` (a slide's results are named after it) as a :class:`SlideRef`."""
        layer = self.viewer.layers[name] if name in self.viewer.layers else None  # noqa: SIM401
        return SlideRef.of(layer) if isinstance(layer, napari.layers.Image) else None

    def place(self, scale: Any, translate: Any, slide: SlideRef | None) -> tuple[Any, Any]:
        """A core result's (scale, translate) on its slide layer (``SlideRef.place``); unchanged without one."""
        return (scale, translate) if slide is None else slide.place(scale, translate, self.viewer)


def repaint(layer: napari.layers.Image) -> None:
    """Show a layer whose data array was changed in place: re-slice and upload the texture, without what
    setting ``layer.data`` adds (dims and extent recomputed: 10-12 instead of 4-5 ms per update on this CPU)."""
    layer.refresh(extent=False, highlight=False)
