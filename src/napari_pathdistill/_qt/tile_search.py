"""Tile search panel: click a tile -> cosine heatmap over a whole slide (this one or another), threshold, GeoJSON.

``TileSearchPanel(viewer)`` is a magicgui Container embedded in the Embed slide widget (usable alone too). Its
``query(map_layer, index)`` puts the cosine of tile ``index`` of ``map_layer`` (a map layer: Labels with
``metadata["pathdistill"]["slide_map"]``) to every tile of the "search in" map into an image layer
``"<target> similarity"`` with napari's colour bar, created once and updated in place afterwards. Cells below the
threshold (and cells without a tile) are transparent; ``export(path=None, kind=None)`` ("Export GeoJSON") writes
the tiles above the threshold, the top-k tiles or the target's clusters (:data:`EXPORTS`) as a QuPath
FeatureCollection, with the core functions of ``pathdistill qupath``.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

import napari
import numpy as np
from magicgui.types import FileDialogMode
from magicgui.widgets import ComboBox, Container, FileEdit, FloatSlider, PushButton

from napari_pathdistill._qt._labels import status_label
from napari_pathdistill._qt._layers import map_layers
from napari_pathdistill._qt._upsert import go_with_slide
from napari_pathdistill.inference.qupath import clusters_geojson, similarity_collection, write_geojson
from napari_pathdistill.inference.similarity_map import Heatmap, SimilarityMapError, heatmap
from napari_pathdistill.inference.slide_maps import SlideMap

#: what "Export GeoJSON" writes (QuPath classes): tiles >= threshold, the top-k tiles, or the target's clusters
EXPORTS = ("thresholded similarity", "similar tiles (top k)", "clusters")


def _magma(transparent_bottom: bool) -> Any:
    """magma from 0.15 (its near-black left out) on controls ``[0, 1e-3 .. 1]``; the colour at 0 transparent, or
    magma's first one."""
    from napari.utils.colormaps import Colormap, ensure_colormap

    colors = _magma_samples(ensure_colormap("magma").colors, np.linspace(0.15, 1.0, 64))
    bottom = np.zeros((1, 4), np.float32) if transparent_bottom else colors[:1]
    controls = np.r_[0.0, np.linspace(1e-3, 1.0, 64)]
    name = "magma above threshold" if transparent_bottom else "magma (similar tiles)"
    return Colormap(colors=np.concatenate([bottom, colors]), controls=controls, name=name)


def _magma_samples(table: np.ndarray, x: np.ndarray) -> np.ndarray:
    """(len(x), 4) float32 RGBA of the 256-entry ``table`` at ``x`` in [0, 1], looked up as matplotlib's
    ``colormaps["magma"](x)`` does (entry ``int(x * 256)``, 1.0 the last). napari's magma table is matplotlib's,
    so the viewer gets matplotlib's colours without importing it (~12 MB resident)."""
    n = len(table)
    idx = np.clip((np.asarray(x, np.float64) * n).astype(int), 0, n - 1)
    return np.asarray(table, np.float32)[idx]


def threshold_colormap() -> Any:
    """magma with a transparent bottom: values at or below the lower contrast limit are not drawn."""
    return _magma(transparent_bottom=True)


def points_colormap() -> Any:
    """The heatmap's magma (:func:`threshold_colormap`) with an opaque bottom, for the Embed widget's top-k points:
    on the same contrast limits (:func:`similarity_limits`) one colour is one cosine in both, and a point below
    the threshold stays drawn (in the lowest colour)."""
    return _magma(transparent_bottom=False)


def similarity_limits(threshold: float) -> tuple[float, float]:
    """Contrast limits of the heatmap (and of the similar-tiles points) at a threshold: [threshold, 1]."""
    return (min(float(threshold), 1.0 - 1e-3), 1.0)  # napari: lo < hi


def _slide_map(layer: Any) -> SlideMap:
    return layer.metadata["pathdistill"]["slide_map"]


def _slide_map_now(layer: Any) -> SlideMap | None:
    """The map a layer holds now (None once it holds none)."""
    meta = layer.metadata.get("pathdistill") if isinstance(layer.metadata, dict) else None
    return meta.get("slide_map") if isinstance(meta, dict) else None


def _base_name(layer: Any) -> str:
    return str(layer.metadata["pathdistill"].get("slide_layer") or layer.name.removesuffix(" clusters"))


#: the start of the summary line before any search (the threshold follows)
IDLE_PREFIX = "similarity >= "


class TileSearchPanel(Container):
    """Similarity heatmap of a clicked tile over this slide or another one, with a threshold and GeoJSON export.

    Args:
        viewer: the napari viewer.
    """

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        self.viewer = viewer
        self.target = ComboBox(label="search in", choices=self._choices, nullable=False)
        # cosines span [-1, 1]: a random model's, or another stain's tiles searched in B, go below 0
        self.threshold = FloatSlider(label="similarity >=", value=0.8, min=-1.0, max=1.0, step=0.001,
                                     readout=False)  # fmt: skip  # the summary line shows the value
        self.summary = status_label()  # wraps: a long slide name must not widen (or be cut by) the dock
        self.export_kind = ComboBox(label="export", choices=list(EXPORTS), value="thresholded similarity")
        self.export_path = FileEdit(label="GeoJSON", mode=FileDialogMode.OPTIONAL_FILE, filter="*.geojson")
        self.export_button = PushButton(text="Export GeoJSON")
        super().__init__(widgets=[self.target, self.threshold, self.summary, self.export_kind, self.export_path,
                                  self.export_button],
                         labels=True)  # fmt: skip
        self.target.tooltip = (
            "Map to search: the clicked slide's own, or another slide's map of the same model."
        )
        self.threshold.tooltip = (
            "Tiles below this cosine are transparent in the heatmap and left out of the export."
        )
        self.top_k = 10  #: tiles in the "similar tiles (top k)" export (the Embed widget may set it)
        self.result: tuple[Any, int, Any, Heatmap] | None = None  # source layer, tile, target layer, heatmap
        self._maps: tuple[SlideMap, SlideMap] | None = None  # the source's and target's maps at the query
        self._on_forget: list[Callable[[], Any]] = []  # told when a recomputed map voids the search
        self.threshold.changed.connect(self._apply_threshold)
        self._apply_threshold()
        self.export_button.changed.connect(lambda _v=None: self.export())
        for ev in (viewer.layers.events.inserted, viewer.layers.events.removed):
            # a bound method: napari holds it weakly (a lambda kept a closed dock alive)
            ev.connect(self._on_layers)
        for layer in viewer.layers:
            layer.events.metadata.connect(self._on_layers)

    def _on_layers(self, event: Any = None) -> None:
        """A layer inserted or removed, or a layer's metadata set: a dropped feature file's clusters layer
        becomes a map when its worker fills it (``_qt.deferred_map``)."""
        if getattr(event, "type", None) == "inserted":
            event.value.events.metadata.connect(self._on_layers)
        self.refresh()

    def _choices(self, _widget: Any = None) -> list[tuple[str, Any]]:
        return [("the clicked slide", None)] + [(layer.name, layer) for layer in map_layers(self.viewer)]

    def refresh(self) -> None:
        """List the viewer's map layers in "search in" again: on every layer inserted or removed, and when a layer
        becomes a map in place (the Embed widget's clusters layer, made empty at the press, gets its
        ``slide_map`` at the run's end: ``EmbedWidget.show_result`` calls this). A search whose map was
        recomputed meanwhile is forgotten (:meth:`forget`), and so is one whose clicked or searched map left the
        viewer (:meth:`drop_removed`)."""
        self._check_search()
        self.target.reset_choices()

    def _check_search(self) -> None:
        """Forget the search if its map was recomputed (:meth:`stale`), or drop it if one of its maps left."""
        if self.stale():
            self.forget()
        self.drop_removed()

    def drop_removed(self) -> None:
        """Drop the search (its heatmap too) when its clicked or searched map layer left the viewer (its slide
        was removed): its cosines are no slide's shown, so neither the summary nor Export GeoJSON use them. The
        top-k points are left alone: they lie on the clicked map, and go with it."""
        if self.result is None:
            return
        source, index, target, _ = self.result
        gone = [layer for layer in (source, target) if layer not in self.viewer.layers]
        if gone:
            self._drop()
            self.summary.value = f"{_base_name(gone[-1])} was removed: tile {index}'s search is dropped"

    def stale(self) -> bool:
        """Whether the clicked or the searched map layer holds another map than at the click (Embed re-run with
        other settings, a feature file's map filled in): the cosines and tile rows no longer fit its tiles."""
        if self.result is None or self._maps is None:
            return False
        source, _, target, _ = self.result
        return _slide_map_now(source) is not self._maps[0] or _slide_map_now(target) is not self._maps[1]

    def on_forget(self, callback: Callable[[], Any]) -> None:
        """Call ``callback`` (a bound method, held weakly) when :meth:`forget` drops the search."""
        self._on_forget.append(weakref.WeakMethod(callback))  # type: ignore[arg-type]

    def forget(self) -> None:
        """Drop the search (its heatmap layer too): its map was recomputed, so its tiles are not this map's."""
        if self.result is None:
            return
        index = self._drop()
        self.summary.value = f"the map of tile {index}'s search was recomputed: click a tile again"
        for ref in self._on_forget:
            callback = ref()
            if callback is not None:
                callback()

    @property
    def contrast_limits(self) -> tuple[float, float]:
        """The heatmap's contrast limits at the current threshold (:func:`similarity_limits`)."""
        return similarity_limits(self.threshold.value)

    def query(self, map_layer: Any, index: int) -> napari.layers.Image:
        """Heatmap of the cosine of tile ``index`` of ``map_layer`` to every tile of the "search in" map.

        One search at a time: the previous click's heatmap on another map is removed (it answered another tile),
        and so is it when this query is refused, whose reason the summary then shows.

        Raises:
            SimilarityMapError: the two maps come from different models (or weights).
        """
        target = self.target.value if self.target.value in self.viewer.layers else map_layer
        maps = (_slide_map(map_layer), _slide_map(target))
        try:
            result = heatmap(maps[0], index, maps[1])
        except SimilarityMapError as exc:  # no heatmap of an earlier click left under this click's points
            self._drop()
            self.summary.value = f"tile {index}: {exc}"
            raise
        if self.result is not None and self.result[2] is not target:
            self._drop()  # one search at a time: the last click's heatmap on another slide goes
        self.result, self._maps = (map_layer, index, target, result), maps
        return self._show(target, result)

    def _drop(self) -> int | None:
        """Forget the current search, then remove its heatmap layer (the removal's event finds no search to
        drop again); returns its tile index (None: there was none)."""
        if self.result is None:
            return None
        _, index, target, _ = self.result
        self.result = self._maps = None
        name = f"{_base_name(target)} similarity"
        if name in self.viewer.layers:
            self.viewer.layers.remove(name)
        return index

    def _show(self, target: Any, result: Heatmap) -> napari.layers.Image:
        name = f"{_base_name(target)} similarity"
        layer = self.viewer.layers[name] if name in self.viewer.layers else None  # noqa: SIM401 (LayerList has no .get)
        if isinstance(layer, napari.layers.Image) and layer.data.shape == result.image.shape:
            layer.data = result.image  # in place: no remove/re-add
        else:
            if layer is not None:
                self.viewer.layers.remove(layer)
            layer = self.viewer.add_image(result.image, name=name, colormap=threshold_colormap(), opacity=0.8,
                                          units=target.units, contrast_limits=(0.0, 1.0))  # fmt: skip
            layer.colorbar.visible = True
        layer.scale, layer.translate = target.scale, target.translate  # wherever the map layer sits now
        go_with_slide(self.viewer, target, [layer])  # it leaves with the map it lies on (it with its slide)
        self._apply_threshold()
        return layer

    def _apply_threshold(self, _value: Any = None) -> None:
        """The heatmap's contrast limits and the summary at the slider's threshold; before any search, the summary
        shows the threshold (the slider has no readout) and says how to start one. A dropped search's line (why it
        was dropped) stays."""
        thr = float(self.threshold.value)
        if self.result is None:
            if not self.summary.value or self.summary.value.startswith(IDLE_PREFIX):
                self.summary.value = (
                    f"{IDLE_PREFIX}{thr:.3f}: click a tile of an embedding map to find tiles like it"
                )
            return
        source, index, target, result = self.result
        name = f"{_base_name(target)} similarity"
        if name in self.viewer.layers:
            self.viewer.layers[name].contrast_limits = similarity_limits(thr)
        n = len(result.above(thr))
        where = "" if target is source else f" in {_base_name(target)}"
        self.summary.value = f"tile {index}: {n} tiles{where} with cosine >= {thr:.3f}"

    def export(self, path: str | Path | None = None, kind: str | None = None) -> Path | None:
        """Write the current search as a QuPath GeoJSON FeatureCollection (atomically).

        Args:
            path: output file (default: the panel's GeoJSON field).
            kind: one of :data:`EXPORTS` (default: the panel's "export" choice): the target tiles with cosine
                >= the threshold (class ``similar``), the ``top_k`` most similar ones, or the target's k-means
                clusters (``cluster 1..k``). The query tile is class ``query`` when it lies on the target slide.
        """
        self._check_search()
        if self.result is None:
            napari.utils.notifications.show_warning("Click a tile first: there is no similarity to export.")
            return None
        path = Path(str(path or self.export_path.value))
        if path.is_dir() or not path.name:
            napari.utils.notifications.show_warning("Choose a .geojson file to write (the GeoJSON field).")
            return None
        kind = kind or str(self.export_kind.value)
        source, index, target, result = self.result
        smap = _slide_map(target)
        coords, size = smap.grid.coords, float(smap.grid.tile_level0 or smap.grid.size_level0)
        query = index if target is source else None
        if kind == "clusters":
            collection = clusters_geojson(coords, size, smap.clusters)
        elif kind == "similar tiles (top k)":
            collection = similarity_collection(coords, size, result.cosine, query=query, top_k=self.top_k)
        else:
            collection = similarity_collection(coords, size, result.cosine, query=query,
                                               threshold=float(self.threshold.value))  # fmt: skip
        out = write_geojson(collection, path)
        self.summary.value = f"wrote {collection.n_tiles} tiles ({kind}, query tile {index}) to {out.name}"
        return out
