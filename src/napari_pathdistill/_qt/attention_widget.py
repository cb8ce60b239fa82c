"""Teacher vs student attention widget: two blended maps side by side (napari grid mode), labelled, compared.

Any two models go on the two sides (a teacher and its student, two students, a model and its random
initialisation). The maps are computed over the tiles in the current view (from the camera) or the whole slide,
streamed in batches by ``inference.attention_pairs.iter_attention_pair``.
"""

from __future__ import annotations

import threading
from collections.abc import Generator
from typing import Any

import napari
import numpy as np
from magicgui.widgets import CheckBox, ComboBox, Container, FloatSlider, FloatSpinBox, PushButton, SpinBox
from napari.utils.colormaps import Colormap

from napari_pathdistill._qt._dock import legible_readout, scroll_when_docked
from napari_pathdistill._qt._labels import RESULT_CHARS, status_label
from napari_pathdistill._qt._layers import (
    SlideLayerChooser,
    SlideRef,
    mpp_override_box,
    no_mpp_note,
    slide_path,
    slide_removed,
)
from napari_pathdistill._qt._model_picker import ModelPicker, ModelRequest
from napari_pathdistill._qt._upsert import go_with_slide, upsert_layer
from napari_pathdistill._qt._workers import TaskRunner, error_message
from napari_pathdistill.device import resolve_device
from napari_pathdistill.inference.attention import spec_heads
from napari_pathdistill.inference.attention_pairs import (
    AttentionPair,
    iter_attention_pair,
    random_init,
    random_model,
)
from napari_pathdistill.models.embedding_model import EmbeddingModel
from napari_pathdistill.models.factory import resolve_spec
from napari_pathdistill.models.spec import ModelSpec
from napari_pathdistill.progress import Progress

REGIONS = ("tiles in current view", "whole slide")
WEIGHTS = ("pretrained", "random init")
BARS = " \u2581\u2582\u2583\u2584\u2585\u2586\u2587\u2588"


def attention_colormap() -> Colormap:
    """Transparent below the region's median, then teal -> green -> yellow with opacity rising to 0.9.

    The maps are percentile ranks, so only the more attended half of the region is tinted and the H&E stays
    readable under it; the top 10 % (ranks > 0.9) are the yellow, most opaque part.
    """
    t = np.array([0.0, 0.5, 0.7, 0.9, 1.0])
    rgb = np.array(
        [[0.13, 0.57, 0.55], [0.13, 0.57, 0.55], [0.37, 0.79, 0.38], [0.99, 0.91, 0.14], [1.0, 0.8, 0.0]]
    )
    alpha = np.array([0.0, 0.0, 0.4, 0.75, 0.9])
    return Colormap(np.c_[rgb, alpha], controls=t, name="attention rank (transparent below median)")


def view_bbox_level0(
    viewer: napari.viewer.Viewer, layer: napari.layers.Image
) -> tuple[float, float, float, float]:
    """What one grid cell of the canvas shows of ``layer``, from the camera: (x0, y0, x1, y1) in level-0 px.

    The camera's centre and zoom (screen px per world unit) and the size of one viewbox (the canvas, or a grid
    cell in grid mode) give the world rectangle on screen; the layer's transform takes it to level-0 pixels.
    """
    scene = getattr(viewer, "scene", None)  # napari >= 0.9; viewer.camera before (deprecated since)
    camera = scene.camera if scene is not None else viewer.camera
    cy, cx = np.asarray(camera.center, dtype=float)[-2:]
    h, w = np.asarray(_viewbox_size(viewer), dtype=float)
    half_y, half_x = h / 2 / camera.zoom, w / 2 / camera.zoom
    lo = np.asarray(layer.world_to_data([cy - half_y, cx - half_x]))[-2:]
    hi = np.asarray(layer.world_to_data([cy + half_y, cx + half_x]))[-2:]
    (y0, y1), (x0, x1) = sorted((lo[0], hi[0])), sorted((lo[1], hi[1]))
    return float(x0), float(y0), float(x1), float(y1)


def _viewbox_size(viewer: napari.viewer.Viewer) -> tuple[float, float]:
    """(h, w) screen px of one viewbox: the canvas, or one grid cell in grid mode."""
    canvas = getattr(viewer, "canvas", None)
    if canvas is not None and hasattr(canvas, "viewbox_size"):
        return tuple(canvas.viewbox_size(viewer.layers))  # type: ignore[return-value]
    size = np.asarray(viewer._canvas_size, dtype=float)  # older napari
    if viewer.grid.enabled:
        size = size / np.asarray(viewer.grid.actual_shape(len(viewer.layers)))
    return float(size[0]), float(size[1])


def r_histogram(counts: np.ndarray, edges: np.ndarray) -> str:
    """One line of bars for a histogram of per-tile r, e.g. ``r -1 [ ▁▃█▅▂ ] +1``."""
    top = counts.max() if counts.size and counts.max() > 0 else 1
    bars = "".join(BARS[int(np.ceil(c / top * (len(BARS) - 1)))] for c in counts)
    return f"per-tile r  {edges[0]:+.0f} [{bars}] {edges[-1]:+.0f}  ({int(counts.sum())} tiles)"


def agreement_text(pair: AttentionPair) -> str:
    """What the agreement numbers are and what they mean."""
    r, ov = pair.tile_r[np.isfinite(pair.tile_r)], pair.tile_overlap[np.isfinite(pair.tile_overlap)]
    med_r = f"{np.median(r):.2f}" if r.size else "n/a"
    med_ov = f"{np.median(ov):.2f}" if ov.size else "n/a"
    pct = f"{100 * pair.top_frac:.0f} %"
    n = len(pair.coords)
    tiles = f"{n:,} tiles."
    if pair.region_tiles > n:
        tiles = (f"{n:,} of the region's {pair.region_tiles:,} tissue tiles: 'max tiles' kept those nearest its "
                 "centre (raise it for all).")  # fmt: skip
    return (
        f"{tiles} Pearson r of the two maps: whole map {pair.overall_r:.2f}, per tile median "
        f"{med_r} (1 = same layout, 0 = unrelated, < 0 = opposite). Top-{pct} overlap (share of the most attended "
        f"{pct} of one map in the other's): whole map {pair.overall_overlap:.2f}, per tile median {med_ov} "
        f"(chance = {pair.top_frac:.2f}, 1 = same hot spots). Compare with a random-init side for the baseline. "
        "Colours (colour bars): each pixel's percentile rank in the region on its own map, 0-1; transparent below "
        "0.5, yellow = top 10 %."
    )


class AttentionWidget(Container):
    """Dock widget: two models' attention on the same overlapping tiles, side by side with a linked camera.

    Args:
        viewer: the napari viewer (injected by npe2).
    """

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        self.viewer = viewer
        self.slide = SlideLayerChooser(viewer)
        self.teacher = ModelPicker(label="teacher", default="efficientnet-lite2-imagenet")
        self.teacher_weights = ComboBox(label="teacher weights", choices=WEIGHTS, value=WEIGHTS[0])
        self.teacher_head = SpinBox(label="teacher head (-1 = mean)", value=-1, min=-1, max=-1)
        self.student = ModelPicker(label="student", default="pathdistill-student")
        self.student_weights = ComboBox(label="student weights", choices=WEIGHTS, value=WEIGHTS[0])
        self.student_head = SpinBox(label="student head (-1 = mean)", value=-1, min=-1, max=-1)
        self.region = ComboBox(label="tiles", choices=REGIONS, value=REGIONS[0])
        self.max_tiles = SpinBox(label="max tiles", value=512, min=1, max=1_000_000)
        self.overlap = FloatSpinBox(label="tile overlap", value=0.5, min=0.0, max=0.75, step=0.25)
        self.mpp_override = mpp_override_box("its tiles are cut at the student's um/px")
        self.mode = ComboBox(label="ViT map", choices=("last", "rollout"), value="last")
        self.opacity = FloatSlider(label="opacity", value=1.0, min=0.0, max=1.0)
        legible_readout(self.opacity)
        self.side_by_side = CheckBox(text="side by side (grid)", value=True)
        self.run_button = PushButton(text="Compute attention")
        self.cancel_button = PushButton(text="Cancel")
        self.status, self.summary = status_label(), status_label(max_chars=RESULT_CHARS)
        self.histogram = status_label()
        widgets = [self.slide, self.teacher, self.teacher_weights, self.teacher_head, self.student,
                   self.student_weights, self.student_head, self.region, self.max_tiles, self.overlap,
                   self.mpp_override, self.mode, self.opacity, self.side_by_side, self.run_button,
                   self.cancel_button, self.status, self.summary, self.histogram]  # fmt: skip
        super().__init__(widgets=widgets, labels=True)
        scroll_when_docked(self)
        self.runner = TaskRunner(self.run_button, self.cancel_button, self.status)
        self.run_button.changed.connect(self.run)
        self.opacity.changed.connect(self._set_opacity)
        self.teacher.on_spec(lambda spec: self._set_head_range(self.teacher_head, spec))
        self.student.on_spec(lambda spec: self._set_head_range(self.student_head, spec))
        self.result: AttentionPair | None = None
        self._map_layers: list[napari.layers.Layer] = []
        self._grid_ours = False  # grid mode was switched on by "side by side", so a run without it ends it

    @staticmethod
    def _set_head_range(head: SpinBox, spec: ModelSpec) -> None:
        """Heads 0 .. n-1 of the model (-1 = mean); a CNN (Grad-CAM) has none, the box is then disabled."""
        n = spec_heads(spec)
        head.max = max(-1, n - 1)
        head.value = min(head.value, head.max)
        head.enabled = n > 0
        head.tooltip = f"{spec.name}: {n} heads" if n else f"{spec.name}: no attention heads (Grad-CAM)"

    def run(self) -> None:
        """Start computing both maps (handler of the Compute button)."""
        try:
            layer = self.slide.value
            path = slide_path(layer)
            sides = [(p.request(), w.value) for p, w in ((self.teacher, self.teacher_weights),
                                                         (self.student, self.student_weights))]  # fmt: skip
        except Exception as exc:
            napari.utils.notifications.show_error(error_message(exc, "Attention"))
            return
        bbox = view_bbox_level0(self.viewer, layer) if self.region.value == REGIONS[0] else None
        heads = tuple(None if h.value < 0 else int(h.value) for h in (self.teacher_head, self.student_head))
        kw = {"bbox": bbox, "max_tiles": self.max_tiles.value, "mode": self.mode.value, "heads": heads,
              "overlap": float(self.overlap.value), "fallback_mpp": float(self.mpp_override.value) or None}  # fmt: skip
        spec = self.student.spec()  # the tiles are cut at the student's tile px / um/px
        tiling = (spec.tile_px, spec.mpp) if spec is not None else (224, 0.5)
        if (note := no_mpp_note(layer, kw["fallback_mpp"], *tiling)) is not None:
            napari.utils.notifications.show_warning(note)

        def factory(cancel: Any) -> Any:
            teacher = yield from _load(*sides[0], cancel)
            student = yield from _load(*sides[1], cancel)
            return (yield from iter_attention_pair(teacher, student, path, cancel=cancel, **kw))

        slide = SlideRef.of(layer)  # the maps go on this slide, whatever is chosen meanwhile
        self.runner.start(factory, lambda pair: self.show_result(pair, slide), "Attention")

    def show_result(self, pair: AttentionPair, slide: SlideRef | None = None) -> None:
        """Add both maps, their difference and the per-tile agreement; arrange the grid (main thread).

        Args:
            pair: the computed maps.
            slide: the slide layer they were computed on (default: the chosen one).
        """
        self.result = pair
        if slide_removed(self.viewer, slide, "Attention", self.status):
            return
        if slide is None and self.slide.value is not None:
            slide = SlideRef.of(self.slide.value)
        units = slide.units if slide is not None else None
        for old in self._map_layers:
            if old in self.viewer.layers:
                self.viewer.layers.remove(old)
        scale, translate = (pair.scale, pair.translate) if slide is None else slide.place(
            pair.scale, pair.translate, self.viewer)  # on the slide layer wherever it was moved  # fmt: skip
        geo = {"scale": scale, "translate": translate, "units": units}
        cmap = attention_colormap()
        maps = []
        for source, data in zip(pair.sources, (pair.teacher_map, pair.student_map), strict=True):
            layer = upsert_layer(self.viewer, "image", data, source.label(), colormap=cmap, contrast_limits=(0, 1),
                                 opacity=self.opacity.value, blending="translucent", interpolation2d="linear", **geo)  # fmt: skip
            name = layer._overlays["layer_name"]  # the grid cell says which model, layer and head
            name.visible, name.font_size = True, 8
            maps.append(layer)
        diff = upsert_layer(self.viewer, "image", pair.difference, "attention difference (student - teacher)",
                            colormap="PiYG", contrast_limits=(-1, 1), opacity=0.7, visible=False, **geo)  # fmt: skip
        for layer in (*maps, diff):  # what a colour means, in each cell, clear of the name drawn top left
            layer.colorbar.visible, layer.colorbar.position = True, "bottom_right"
        on_view = slide.layer(self.viewer) if slide is not None else None
        frame = (
            {"scale": on_view.scale[-2:], "translate": on_view.translate[-2:]} if on_view is not None else {}
        )
        # hovering a map names the tile nearest the cursor: each point answers over the square of its tile's centre
        # (napari's Points hit test), drawn transparent (a hidden layer is not sliced, so it would answer nothing)
        side = pair.stride_level0 or pair.tile_px_level0
        tiles = upsert_layer(self.viewer, "points", tile_centres(pair), "attention tiles", size=side, symbol="square",
                             face_color="transparent", border_color="white", border_width=0,
                             features=pair.feature_table(), units=units, **frame)  # fmt: skip
        self._map_layers = [*maps, diff, tiles]
        self.summary.value = agreement_text(pair)
        self.histogram.value = r_histogram(pair.hist_counts, pair.hist_edges)
        if self.side_by_side.value and on_view is not None:
            self._map_layers.append(
                self._arrange_grid(on_view, maps[0], tiles, maps[1], diff)
            )  # replaced with them
        else:
            self._end_grid()
        self.viewer.layers.selection.active = (
            tiles  # the status bar shows the hovered tile's x, y, r, overlap
        )
        # the maps, tiles and student view leave with their slide, and our grid ends
        go_with_slide(self.viewer, on_view, self._map_layers, self._end_grid)

    def _end_grid(self) -> None:
        """End the grid mode a side-by-side run switched on (a grid the user switched on stays): without the
        student view the student map would sit alone in the second cell, over no slide."""
        if self._grid_ours:
            self.viewer.grid.enabled = self._grid_ours = False

    def _arrange_grid(self, slide: Any, teacher: Any, tiles: Any, student: Any, diff: Any) -> Any:
        """Grid mode, stride 3: cell 1 = slide + teacher map + the (transparent) tile points, cell 2 = a view of the
        slide + student map + the difference (hidden); one camera, fitted to the maps (the grid halves each cell's
        width). Returns the view layer."""
        view_name = f"{slide.name} (student view)"
        view = upsert_layer(self.viewer, "image", slide.data, view_name, multiscale=slide.multiscale,
                            rgb=slide.rgb, scale=slide.scale, translate=slide.translate, units=slide.units)  # fmt: skip
        layers = self.viewer.layers
        # napari >= 0.9 groups layers by index // stride from the bottom of the list (hidden groups skipped):
        # indices 0-2 -> first cell, 3-5 -> second cell; other layers go to later cells.
        for target, layer in enumerate((slide, teacher, tiles, view, student, diff)):
            layers.move(layers.index(layer), target)
        self.viewer.grid.stride = 3
        self._grid_ours = self._grid_ours or not self.viewer.grid.enabled  # the user's own grid stays
        self.viewer.grid.enabled = True
        self.viewer.fit_to_view(layers=[teacher, student])
        return view

    def _set_opacity(self, value: float) -> None:
        for layer in self._map_layers[:2]:
            if layer in self.viewer.layers:
                layer.opacity = value


def tile_centres(pair: AttentionPair) -> np.ndarray:
    """(N, 2) tile centres (y, x) in level-0 px: the slide layer's data frame (the points layer takes that
    layer's scale and translate, so it lies on the slide wherever it sits); hover shows each tile's r."""
    centre = pair.coords + pair.tile_px_level0 / 2 - 0.5
    return centre[:, ::-1]


def _load(
    request: ModelRequest, weights: str, cancel: threading.Event
) -> Generator[Progress, None, EmbeddingModel]:
    """The model of one side (in the worker): pretrained (the copy a task already holds, see
    ``ModelRequest.load_steps``), or the architecture's random initialisation."""
    if weights == WEIGHTS[0]:
        return (yield from request.load_steps(cancel))
    if request.model is not None:
        return random_init(request.model)
    # the spec alone (registry entry or checkpoint config.json): no weights are read, a hub model works offline
    return random_model(resolve_spec(request.source), resolve_device(request.device))
