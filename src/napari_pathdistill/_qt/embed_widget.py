"""Embed slide widget: embedding map (PCA RGB) filling in while the model runs, k-means clusters with a legend,
click a tile of any map layer for similar tiles. Features are cached (``inference.feature_cache``) and resumed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import napari
from magicgui.types import FileDialogMode
from magicgui.widgets import (
    ComboBox,
    Container,
    FileEdit,
    FloatSpinBox,
    Label,
    ProgressBar,
    PushButton,
    SpinBox,
)
from qtpy.QtCore import Qt
from qtpy.QtWidgets import QLabel

from napari_pathdistill._qt._clusters import legend_html, remove_unfilled, warm_labels_layer
from napari_pathdistill._qt._dock import on_dock_change, scroll_when_docked
from napari_pathdistill._qt._labels import status_label
from napari_pathdistill._qt._layers import (
    SlideLayerChooser,
    SlideRef,
    mpp_override_box,
    no_mpp_note,
    slide_path,
    slide_removed,
    tile_mpp_box,
)
from napari_pathdistill._qt._model_picker import ModelPicker, follow_spec, with_models
from napari_pathdistill._qt._workers import TaskRunner
from napari_pathdistill._qt.embed_clicks import TileClicks
from napari_pathdistill._qt.embed_maps import MapPainter
from napari_pathdistill._qt.similar_tiles import map_layer_at
from napari_pathdistill._qt.tile_search import TileSearchPanel
from napari_pathdistill.inference.feature_cache import default_cache_dir, ensure_cache_dir, resolve_cache_dir
from napari_pathdistill.inference.live_map import FIT_ROWS, PartialMap, iter_live_map
from napari_pathdistill.inference.slide_maps import SlideMap
from napari_pathdistill.models.spec import ModelSpec
from napari_pathdistill.progress import Progress

__all__ = ["TILES", "TOKENS", "EmbedWidget", "map_layer_at", "stride_tooltip"]


def _units(layer: Any) -> Any:
    """The slide layer's units (um from our reader) so overlays render in the same units."""
    return getattr(layer, "units", None)


#: choices of the "map" field
TILES, TOKENS = "tiles", "patch tokens (ViT)"


def _folder(value: Any) -> Path | None:
    """A FileEdit's folder (None when it holds none)."""
    return Path(value) if isinstance(value, (str, Path)) else None


def stride_tooltip(spec: ModelSpec | None) -> str:
    """The "token stride px" tooltip, naming the chosen model's patch size."""
    patch = spec.patch_size if spec is not None else None
    what = "a multiple of the ViT's patch size"
    if spec is not None:
        what += f" ({patch} px for {spec.name})" if patch else f"; {spec.name} has none: it is no ViT"
    return (
        f"Patch-token map only: model px between neighbouring tiles ({what}); 0: the tile px (no overlap). "
        "Half a tile averages each patch cell over up to 4 tiles."
    )


class EmbedWidget(TileClicks, Container):
    """Dock widget: embed the tiles of a slide and show the embedding map, clusters and similar tiles.

    Args:
        viewer: the napari viewer (injected by npe2).
    """

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        self.viewer = viewer
        self.slide = SlideLayerChooser(viewer)
        self.model = ModelPicker()
        self.tile_px = SpinBox(label="tile px", value=224, min=32, max=1024, step=16)
        self.mpp = tile_mpp_box()
        self.mpp_override = mpp_override_box("its tiles are cut at 'um/px' like any other slide's")
        self.min_tissue = FloatSpinBox(label="min tissue", value=0.5, min=0.0, max=1.0, step=0.05)
        self.batch_size = SpinBox(label="batch size", value=32, min=1, max=1024)
        self.k = SpinBox(label="clusters (k)", value=6, min=1, max=64)
        self.top_k = SpinBox(label="similar tiles", value=10, min=1, max=500)
        self.map_kind = ComboBox(label="map", choices=[TILES, TOKENS], value=TILES)
        # a whole-number QDoubleSpinBox: magicgui's SpinBox (superqt's) shows no special value text
        self.stride = FloatSpinBox(label="token stride px", value=0, min=0, max=1024, step=14)
        self.stride.native.setDecimals(0)
        self.cache_dir = FileEdit(
            label="feature cache", mode=FileDialogMode.EXISTING_DIRECTORY, value=default_cache_dir()
        )
        self.run_button = PushButton(text="Embed")
        self.cancel_button = PushButton(text="Cancel")
        self.progress = ProgressBar(label="progress", value=0, min=0, max=1)
        self.status = status_label()
        self.legend = Label(value="")
        self.search = TileSearchPanel(viewer)  # the clicked tile's similarity heatmap, cross-slide, GeoJSON
        self.search.label = "tile search"
        widgets = [self.slide, self.model, self.tile_px, self.mpp, self.mpp_override, self.min_tissue,
                   self.batch_size, self.k, self.top_k, self.map_kind, self.stride, self.cache_dir, self.run_button,
                   self.cancel_button, self.progress, self.status, self.legend, self.search]  # fmt: skip
        super().__init__(widgets=widgets, labels=True)
        scroll_when_docked(self)
        self.runner = TaskRunner(self.run_button, self.cancel_button, self.status)
        self.run_button.changed.connect(self.run)
        self.result: SlideMap | None = None
        legend_label: QLabel = self.legend.native
        legend_label.setTextFormat(Qt.TextFormat.RichText)
        self.tile_px.tooltip = "Tile side fed to the model; follows the chosen model's until you change it."
        self.mpp.tooltip = (
            "um/px of the tiles fed to the model; follows the chosen model's until you change it."
        )
        self.cache_dir.tooltip = (
            "Folder of the feature files (HDF5, as `pathdistill embed` writes): a matching file is reused, a "
            "cancelled run resumes. Empty: $PATHDISTILL_CACHE_DIR, else the user cache folder."
        )
        self.stride.tooltip = stride_tooltip(None)
        # 0 = the tile px (no overlap), not a stride of 0 px
        self.stride.native.setSpecialValueText("tile px")
        self.stride.enabled = False  # the patch-token map's only
        self.map_kind.changed.connect(lambda kind: setattr(self.stride, "enabled", kind == TOKENS))
        follow_spec(self.model, self.tile_px, self.mpp)
        self.model.on_spec(self._follow_patch_size)
        # one colour, one cosine: the similar-tiles points follow the heatmap's contrast limits
        self.search.threshold.changed.connect(self._recolour_similar)
        self.search.on_forget(self._forget_similar)  # a recomputed map voids its click's points too
        self._labels_name: str | None = None
        self._units: Any = None  # units of the slide the shown result was computed from
        self.maps = MapPainter(viewer)  # the map layers: live raster while embedding, then the result
        self._run_slide: SlideRef | None = None  # the slide layer of the run in flight (its maps go on it)
        self._shown = False  # the run in flight showed its result
        self.fit_rows = FIT_ROWS  # tiles the live PCA colours wait for (then every written chunk is painted)
        # viewer-level clicks (whatever layer is active), until a closed dock stops answering them
        self._listen_to_clicks(True)
        on_dock_change(self, self._listen_to_clicks)
        warm_labels_layer()  # napari's first Labels layer of a session costs seconds: here, not at a run's end

    def _follow_patch_size(self, spec: ModelSpec) -> None:
        """The stride field steps by the chosen model's patch size, and its tooltip names it."""
        self.stride.tooltip = stride_tooltip(spec)
        patch = spec.patch_size
        if patch:
            self.stride.step = patch

    def run(self) -> None:
        """Start embedding the chosen slide (handler of the Embed button)."""
        layer, dense = self.slide.value, self.map_kind.value == TOKENS
        try:
            path = slide_path(layer)
            request = self.model.request()
            if not dense:  # the patch-token map is not cached
                cache = ensure_cache_dir(resolve_cache_dir(_folder(self.cache_dir.value)), writable=False)
        except Exception as exc:  # no slide, no model, a cache folder that cannot be made: no run
            self.runner.say_error(exc, "Embedding")
            return
        tile_px, mpp, min_tissue = self.tile_px.value, self.mpp.value, self.min_tissue.value
        fallback = float(self.mpp_override.value) or None
        if (note := no_mpp_note(layer, fallback, tile_px, mpp)) is not None:
            napari.utils.notifications.show_warning(note)
        batch_size, k, fit_rows = self.batch_size.value, self.k.value, self.fit_rows
        source = (layer.name, _units(layer))  # results belong to this slide, whatever is chosen meanwhile
        slide = SlideRef.of(layer)
        if dense:
            self._run_dense(request, path, source, fallback, slide)
            return

        def factory(cancel: Any) -> Any:
            return with_models(cancel, [request], lambda model: iter_live_map(
                model, path, cache, tile_px=tile_px, mpp=mpp, min_tissue=min_tissue, batch_size=batch_size, k=k,
                fit_rows=fit_rows, fallback_mpp=fallback, cancel=cancel))  # fmt: skip

        self.maps.live, self._run_slide = None, slide
        added = self.maps.add_layers(path, slide, (tile_px, mpp, fallback), k, self.model.choice.value)
        ended = self._on_end(added)  # the bar as it was
        self.progress.value = 0
        self.runner.start(factory, lambda result: self._finished(result, source, slide), "Embedding",
                          on_item=lambda item: self._on_item(item, source), on_end=ended,
                          cancel_note="the tiles done are kept in the feature cache: Embed resumes them")  # fmt: skip

    def _on_end(self, added: list[Any]) -> Any:
        """The ``on_end`` of a run starting now: remove the layers it added and left empty; when it showed no
        result (it failed, or its slide was removed), the progress bar back where it was, on the result still
        shown beside its legend and layers, not at 0 %. A cancelled run keeps its bar on the tiles it painted."""
        before, self._shown = (self.progress.max, self.progress.value), False

        def ended() -> None:
            remove_unfilled(self.viewer, added)
            if not self._shown and not self.runner.cancel_event.is_set():
                self.progress.max, self.progress.value = before

        return ended

    def _finished(self, result: SlideMap, source: tuple[str, Any], slide: SlideRef) -> None:
        """The run's end (main thread): its map on its slide, unless that slide was removed meanwhile (the
        features stay in the cache: Embed on the re-opened slide shows them at once)."""
        if not slide_removed(self.viewer, slide, "Embedding", self.status):
            self.show_result(result, source, slide)
            self._shown = True

    def _run_dense(
        self, request: Any, path: Path, source: tuple[str, Any], fallback: float | None, slide: SlideRef
    ) -> None:
        """The "patch tokens (ViT)" map: ``inference.dense_maps.iter_dense_map`` -> ``show_dense_map``."""
        from napari_pathdistill._qt.dense_map import show_dense_map
        from napari_pathdistill.inference.dense_maps import iter_dense_map

        tile_px, mpp, min_tissue = self.tile_px.value, self.mpp.value, self.min_tissue.value
        batch_size, stride = self.batch_size.value, int(self.stride.value) or None

        def factory(cancel: Any) -> Any:
            return with_models(cancel, [request], lambda model: iter_dense_map(
                model, path, tile_px=tile_px, mpp=mpp, min_tissue=min_tissue, stride_px=stride,
                batch_size=batch_size, fallback_mpp=fallback, cancel=cancel))  # fmt: skip

        def finished(result: Any) -> None:
            if not slide_removed(self.viewer, slide, "Patch-token map", self.status):
                placement = slide.place(result.scale, result.translate, self.viewer)
                show_dense_map(
                    self.viewer, result, *source, placement=placement, slide=slide.layer(self.viewer)
                )
                self._shown = True

        ended = self._on_end([])
        self.progress.value = 0
        self.runner.start(factory, finished, "Patch-token map", on_end=ended,
                          on_item=lambda item: self._on_item(item, source))  # fmt: skip

    def _on_item(self, item: Any, source: tuple[str, Any]) -> None:
        """Main thread, while embedding: move the dock's progress bar, paint a :class:`PartialMap` (on the slide
        layer of the run, ``_run_slide``)."""
        if isinstance(item, Progress):
            if item.total:
                self.progress.max, self.progress.value = item.total, min(item.done, item.total)
        elif isinstance(item, PartialMap):
            self.paint_partial(item, source, self._run_slide)

    def paint_partial(
        self, part: PartialMap, source: tuple[str, Any], slide: SlideRef | None = None
    ) -> napari.layers.Image | None:
        """Paint the tiles of ``part`` into the "<slide> embedding map" layer, in place (``MapPainter.paint``),
        on the slide layer ``slide`` (default: the layer named ``source[0]``) wherever it sits; nothing (None)
        once that slide layer was removed."""
        return self.maps.paint(part, source, slide, self.model.choice.value)

    def show_result(
        self, result: SlideMap, source: tuple[str, Any] | None = None, slide: SlideRef | None = None
    ) -> None:
        """Add the embedding map, the cluster labels (with features) and connect tile clicks (main thread).

        Args:
            result: the computed map.
            source: (slide layer name, units) of the slide it was computed from (default: the chosen one).
            slide: that slide layer (default: the layer called ``source[0]``): the map layers follow its scale
                and translate, wherever it was moved.
        """
        self.result = result
        if source is None:
            layer = self.slide.value
            source = (layer.name if layer is not None else "slide", _units(layer))
        self._units = source[1]
        labels = self.maps.show(result, source, slide)
        self.progress.max = self.progress.value = max(1, len(result.features))
        self.legend.value = legend_html(result.clusters)
        self._labels_name = labels.name
        self.search.refresh()  # the clusters layer became a map in place: list it in "search in"
        self.viewer.layers.selection.active = labels
