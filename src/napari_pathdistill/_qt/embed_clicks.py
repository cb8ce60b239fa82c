"""Tile clicks of the Embed widget: a click (no drag) on a tile of any map layer shows that slide's most similar
tiles as points and the clicked tile's cosine heatmap (the tile-search panel); a closed dock stops answering."""

from __future__ import annotations

from typing import Any

import napari

from napari_pathdistill._qt._labels import StatusLabel
from napari_pathdistill._qt._layers import map_layers
from napari_pathdistill._qt._upsert import added_unselected, keep_active
from napari_pathdistill._qt._workers import TaskRunner
from napari_pathdistill._qt.embed_maps import MapPainter
from napari_pathdistill._qt.similar_tiles import (
    NAME,
    map_layer_at,
    recolour_similar_tiles,
    show_similar_tiles,
)
from napari_pathdistill._qt.tile_search import TileSearchPanel
from napari_pathdistill.errors import PathDistillError
from napari_pathdistill.inference.slide_maps import SlideMap


class TileClicks:
    """The tile-click half of :class:`~napari_pathdistill._qt.embed_widget.EmbedWidget`, which sets the
    attributes below; ``top_k`` is its "similar tiles" field (a magicgui ``SpinBox``)."""

    viewer: napari.viewer.Viewer
    runner: TaskRunner
    result: SlideMap | None
    maps: MapPainter
    search: TileSearchPanel
    top_k: Any
    status: StatusLabel
    _labels_name: str | None
    _units: Any

    def _listen_to_clicks(self, on: bool) -> None:
        """Tile clicks reach this widget while it is docked (or never was): not once its dock is closed, which
        also lets go of the maps it holds (the layers keep theirs; magicgui's slider keeps a closed form alive)."""
        callbacks = self.viewer.mouse_drag_callbacks
        if on and self._on_click not in callbacks:
            callbacks.append(self._on_click)
        elif not on and self._on_click in callbacks:
            callbacks.remove(self._on_click)
            if not self.runner.running:
                self.result, self.maps.live, self.search.result = None, None, None

    def _on_click(self, viewer: Any, event: Any) -> Any:
        """A click (press + release without a drag, so panning is left alone) on a tile of any map layer
        (``metadata["pathdistill"]["slide_map"]``, ours or a reader's) shows that slide's most similar tiles."""
        if getattr(event, "button", 1) != 1 or not map_layers(viewer):
            return
        dragged = False
        yield
        while event.type == "mouse_move":
            dragged = True
            yield
        if dragged:
            return
        hit = map_layer_at(viewer, event.position)
        if hit is not None:
            self.search_tile(hit[1], hit[0])

    def search_tile(self, index: int, layer: Any) -> None:
        """A clicked tile: its top-k similar tiles as points, and its cosine heatmap over the "search in" map."""
        with added_unselected(self.viewer):  # the map stays active; no controls panel flips to and fro
            self.show_similar(index, layer)
            self.search.top_k = self.top_k.value  # its "similar tiles (top k)" export: the points shown
            try:
                self.search.query(layer, index)
            except PathDistillError as exc:  # e.g. a cross-slide map of another model
                napari.utils.notifications.show_error(str(exc))
        keep_active(self.viewer, layer)  # hovering the map shows its features in the status bar

    def show_similar(self, index: int, layer: Any = None) -> napari.layers.Points:
        """Put the query tile and its top-k most similar tiles (cosine) of a map layer in a Points layer, on that
        layer wherever it sits, coloured as the similarity heatmap (``_qt.similar_tiles.show_similar_tiles``).

        Args:
            index: the query tile (row of the map's features).
            layer: the map layer clicked (default: this widget's last clusters layer).
        """
        if layer is None:
            layer = self.viewer.layers[self._labels_name] if self._labels_name in self.viewer.layers else None  # noqa: SIM401
        smap: SlideMap | None = (
            layer.metadata["pathdistill"]["slide_map"] if layer is not None else self.result
        )
        assert smap is not None
        points, cos = show_similar_tiles(self.viewer, smap, index, self.top_k.value, layer, self._units,
                                         self.search.contrast_limits)  # fmt: skip
        self.status.value = f"tile {index}: top-{len(cos)} mean cosine {cos.mean():.3f}"
        keep_active(self.viewer, layer)  # hovering the map shows its features in the status bar, as before
        return points

    def _forget_similar(self) -> None:
        """The tile search was dropped (its map was recomputed): the top-k points of that click go with it."""
        if NAME in self.viewer.layers:
            self.viewer.layers.remove(NAME)

    def _recolour_similar(self, _value: Any = None) -> None:
        """The threshold moved the heatmap's contrast limits: the similar-tiles points follow them."""
        recolour_similar_tiles(self.viewer, self.search.contrast_limits)
