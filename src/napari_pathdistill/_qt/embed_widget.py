"""Embed slide widget: embedding map (PCA RGB), k-means clusters with a legend, click a tile for similar tiles."""

from __future__ import annotations

from typing import Any

import napari
import numpy as np
from magicgui.widgets import Container, FloatSpinBox, Label, PushButton, SpinBox
from qtpy.QtCore import Qt
from qtpy.QtWidgets import QLabel

from napari_pathdistill._qt._labels import status_label
from napari_pathdistill._qt._layers import SlideLayerChooser, slide_path, upsert_layer
from napari_pathdistill._qt._model_picker import ModelPicker, follow_spec
from napari_pathdistill._qt._workers import TaskRunner, error_message
from napari_pathdistill.inference.slide_maps import SlideMap, iter_slide_map


def _units(layer: Any) -> Any:
    """The slide layer's units (um from our reader) so overlays render in the same units."""
    return getattr(layer, "units", None)


class EmbedWidget(Container):
    """Dock widget: embed the tiles of a slide and show the embedding map, clusters and similar tiles.

    Args:
        viewer: the napari viewer (injected by npe2).
    """

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        self.viewer = viewer
        self.slide = SlideLayerChooser(viewer)
        self.model = ModelPicker()
        self.tile_px = SpinBox(label="tile px", value=224, min=32, max=1024, step=16)
        self.mpp = FloatSpinBox(label="um/px", value=0.5, min=0.05, max=100.0, step=0.25)
        self.min_tissue = FloatSpinBox(label="min tissue", value=0.5, min=0.0, max=1.0, step=0.05)
        self.batch_size = SpinBox(label="batch size", value=32, min=1, max=1024)
        self.k = SpinBox(label="clusters (k)", value=6, min=1, max=64)
        self.top_k = SpinBox(label="similar tiles", value=10, min=1, max=500)
        self.run_button = PushButton(text="Embed")
        self.cancel_button = PushButton(text="Cancel")
        self.status = status_label()
        self.legend = Label(value="")
        widgets = [self.slide, self.model, self.tile_px, self.mpp, self.min_tissue, self.batch_size, self.k,
                   self.top_k, self.run_button, self.cancel_button, self.status, self.legend]  # fmt: skip
        super().__init__(widgets=widgets, labels=True)
        self.runner = TaskRunner(self.run_button, self.cancel_button, self.status)
        self.run_button.changed.connect(self.run)
        self.result: SlideMap | None = None
        legend_label: QLabel = self.legend.native
        legend_label.setTextFormat(Qt.TextFormat.RichText)
        self.tile_px.tooltip = "Tile side fed to the model; follows the chosen model's until you change it."
        self.mpp.tooltip = (
            "um/px of the tiles fed to the model; follows the chosen model's until you change it."
        )
        follow_spec(self.model, self.tile_px, self.mpp)
        self._labels_name: str | None = None
        self._units: Any = None  # units of the slide the shown result was computed from
        viewer.mouse_drag_callbacks.append(self._on_click)  # viewer-level: works whatever layer is active

    def run(self) -> None:
        """Start embedding the chosen slide (handler of the Embed button)."""
        layer = self.slide.value
        try:
            path = slide_path(layer)
            request = self.model.request()
        except Exception as exc:
            napari.utils.notifications.show_error(error_message(exc, "Embedding"))
            return
        tile_px, mpp, min_tissue = self.tile_px.value, self.mpp.value, self.min_tissue.value
        batch_size, k = self.batch_size.value, self.k.value

        def factory(cancel: Any) -> Any:
            return iter_slide_map(request.load(), path, tile_px=tile_px, mpp=mpp, min_tissue=min_tissue,
                                  batch_size=batch_size, k=k, cancel=cancel)  # fmt: skip

        source = (layer.name, _units(layer))  # results belong to this slide, whatever is chosen meanwhile
        self.runner.start(factory, lambda result: self.show_result(result, source), "Embedding")

    def show_result(self, result: SlideMap, source: tuple[str, Any] | None = None) -> None:
        """Add the embedding map, the cluster labels (with features) and connect tile clicks (main thread).

        Args:
            result: the computed map.
            source: (slide layer name, units) of the slide it was computed from (default: the chosen one).
        """
        self.result = result
        if source is None:
            layer = self.slide.value
            source = (layer.name if layer is not None else "slide", _units(layer))
        name, self._units = source
        geo = {"scale": result.scale, "translate": result.translate, "units": self._units}
        rgba = np.concatenate([result.raster(result.rgb), (result.index_image > 0)[..., None]], axis=-1)
        upsert_layer(self.viewer, "image", rgba.astype(np.float32), f"{name} embedding map", rgb=True, **geo,
                     opacity=0.7, metadata={"pathdistill": {"model": result.model_name}})  # fmt: skip
        # the raster holds tile ids, so napari's hover looks up the hovered tile's row of ``features``; the
        # colours come from each tile's cluster
        labels = upsert_layer(self.viewer, "labels", result.index_image.astype(np.int32), f"{name} clusters",
                              opacity=0.5, features=result.feature_table(), colormap=cluster_colormap(result.clusters),
                              **geo)  # fmt: skip
        self._set_legend(result)
        self._labels_name = labels.name
        self.viewer.layers.selection.active = labels

    def _set_legend(self, result: SlideMap) -> None:
        ids, counts = np.unique(result.clusters, return_counts=True)
        palette = cluster_palette(int(ids.max()))
        rows = []
        for i, n in zip(ids, counts, strict=True):
            r, g, b, _ = (palette[int(i)] * 255).astype(int)
            rows.append(f"<span style='color:#{r:02x}{g:02x}{b:02x}'>&#9632;</span> cluster {i}: {n} tiles")
        self.legend.value = "<br>".join(rows)

    def _on_click(self, viewer: Any, event: Any) -> Any:
        """A click (press + release without a drag, so panning is left alone) on an embedded tile shows the
        most similar tiles of the slide as points."""
        if self.result is None or self._labels_name not in viewer.layers or getattr(event, "button", 1) != 1:
            return
        dragged = False
        yield
        while event.type == "mouse_move":
            dragged = True
            yield
        if dragged or self.result is None or self._labels_name not in viewer.layers:
            return
        row, col = viewer.layers[self._labels_name].world_to_data(event.position)[-2:]
        index = self.result.tile_at(row, col)
        if index is not None:
            self.show_similar(index)

    def show_similar(self, index: int) -> napari.layers.Points:
        """Put the query tile and its top-k most similar tiles (cosine) in a Points layer."""
        assert self.result is not None
        idx, cos = self.result.most_similar(index, self.top_k.value)
        centers = self.result.tile_centers()
        pts = np.concatenate([centers[[index]], centers[idx]])
        features = {
            "tile": np.r_[index, idx],
            "cosine": np.r_[1.0, cos],
            "query": np.r_[True, np.zeros(len(idx), bool)],
        }
        size = float(min(self.result.scale)) * 0.6
        symbols = ["star"] + ["disc"] * len(idx)
        layer = self.viewer.layers["similar tiles"] if "similar tiles" in self.viewer.layers else None  # noqa: SIM401 (LayerList has no .get)
        if isinstance(layer, napari.layers.Points):  # in place: removing a layer costs a napari gc pass
            layer.data, layer.features, layer.size, layer.symbol = pts, features, size, symbols
            layer.face_color = "cosine"
            layer.refresh()
        else:
            layer = upsert_layer(self.viewer, "points", pts, "similar tiles", features=features, size=size,
                                 face_color="cosine", symbol=symbols, units=self._units,
                                 face_colormap="magma", border_color="white")  # fmt: skip
        self.status.value = f"tile {index}: top-{len(idx)} mean cosine {cos.mean():.3f}"
        # keep the clusters active: hovering shows their features in the status bar, as before the click
        if self._labels_name in self.viewer.layers:
            self.viewer.layers.selection.active = self.viewer.layers[self._labels_name]
        return layer


def cluster_palette(k: int) -> np.ndarray:
    """(k + 1, 4) RGBA: transparent for 0, then napari's label colours for clusters 1..k."""
    from napari.utils.colormaps import label_colormap

    return np.asarray(label_colormap(max(k, 1) + 1).map(np.arange(k + 1)), dtype=np.float32)


def cluster_colormap(clusters: np.ndarray) -> Any:
    """Colours for a raster of tile ids 1..N: tile i + 1 gets the colour of its cluster ``clusters[i]``."""
    from napari.utils.colormaps import DirectLabelColormap

    palette = cluster_palette(int(clusters.max()) if len(clusters) else 1)
    colors: dict[int | None, np.ndarray] = {None: np.zeros(4, np.float32), 0: np.zeros(4, np.float32)}
    colors.update({i + 1: palette[int(c)] for i, c in enumerate(clusters)})
    return DirectLabelColormap(color_dict=colors)
