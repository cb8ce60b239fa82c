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
from magicgui.widgets import CheckBox, ComboBox, Container, FloatSlider, FloatSpinBox, PushButton, SpinBox

from napari_pathdistill._qt._attention_view import (
    agreement_text,
    attention_colormap,
    r_histogram,
    tile_centres,
    view_bbox_level0,
)
from napari_pathdistill._qt._dock import legible_readout, scroll_when_docked
from napari_pathdistill._qt._labels import RESULT_CHARS, status_label
from napari_pathdistill._qt._layers import (
    SlideLayerChooser,
    SlideRef,
    mpp_override_box,
    no_mpp_note,
    slide_path,
    slide_removed,
    stop_when_removed,
)
from napari_pathdistill._qt._model_picker import ModelPicker, ModelRequest
from napari_pathdistill._qt._upsert import go_with_slide, upsert_layer
from napari_pathdistill._qt._workers import TaskRunner
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
from napari_pathdistill.progress import Progress, raise_if_cancelled

REGIONS = ("tiles in current view", "whole slide")
WEIGHTS = ("pretrained", "random init")


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
        self.min_tissue = FloatSpinBox(label="min tissue", value=0.5, min=0.0, max=1.0, step=0.05)
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
                   self.min_tissue, self.mpp_override, self.mode, self.opacity, self.side_by_side, self.run_button,
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
        self._view: napari.layers.Layer | None = None  # the student view of the last side-by-side run

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
            self.runner.say_error(exc, "Attention")
            return
        bbox = view_bbox_level0(self.viewer, layer) if self.region.value == REGIONS[0] else None
        heads = tuple(None if h.value < 0 else int(h.value) for h in (self.teacher_head, self.student_head))
        kw = {"bbox": bbox, "max_tiles": self.max_tiles.value, "mode": self.mode.value, "heads": heads,
              "overlap": float(self.overlap.value), "min_tissue": float(self.min_tissue.value),
              "fallback_mpp": float(self.mpp_override.value) or None}  # fmt: skip
        spec = self.student.spec()  # the tiles are cut at the student's tile px / um/px
        tiling = (spec.tile_px, spec.mpp) if spec is not None else (224, 0.5)
        if (note := no_mpp_note(layer, kw["fallback_mpp"], *tiling)) is not None:
            napari.utils.notifications.show_warning(note)

        def factory(cancel: Any) -> Any:
            teacher = yield from _load(*sides[0], cancel)
            student = yield from _load(*sides[1], cancel)
            return (yield from iter_attention_pair(teacher, student, path, cancel=cancel, **kw))

        slide = SlideRef.of(layer)  # the maps go on this slide, whatever is chosen meanwhile
        self._clear_numbers()  # the last run's agreement is not this run's (a cancelled run left it)
        self.runner.start(factory, lambda pair: self.show_result(pair, slide), "Attention",
                          on_end=stop_when_removed(self.viewer, slide, self.runner, "Attention"))  # fmt: skip

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
        self._view = None  # the old view goes below: a re-run replaces it, the grid stays
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
        # (napari's Points hit test), drawn transparent (a hidden layer is not sliced, so it would answer nothing);
        # border too: one of width 0 is still a 1 px outline, which turned the teacher's cell white zoomed out
        side = pair.stride_level0 or pair.tile_px_level0
        tiles = upsert_layer(self.viewer, "points", tile_centres(pair), "attention tiles", size=side, symbol="square",
                             face_color="transparent", border_color="transparent", border_width=0,
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
        # the maps, tiles and student view leave with their slide, our grid ends and their numbers go
        go_with_slide(self.viewer, on_view, self._map_layers, self._maps_gone)

    def _clear_numbers(self) -> None:
        self.summary.value = self.histogram.value = ""

    def _maps_gone(self) -> None:
        """The maps left with their slide: their agreement numbers and our grid go too."""
        self._clear_numbers()
        self._end_grid()

    def _end_grid(self) -> None:
        """End the grid mode a side-by-side run switched on (a grid the user switched on stays): without the
        student view the student map would sit alone in the second cell, over no slide."""
        if self._grid_ours:
            self.viewer.grid.enabled = self._grid_ours = False

    def _view_left(self, event: Any) -> None:
        """The student view left (removed by the user): the student map would sit alone over black in its cell, so
        the grid the run started ends, both maps then over the slide (a re-run's replaced view ends nothing)."""
        if event.value is not None and event.value is self._view:
            self._view = None
            self._end_grid()

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
        self._view = view
        layers.events.removed.connect(self._view_left)  # a bound method: held weakly, connected once
        self.viewer.fit_to_view(layers=[teacher, student])
        return view

    def _set_opacity(self, value: float) -> None:
        for layer in self._map_layers[:2]:
            if layer in self.viewer.layers:
                layer.opacity = value


def _load(
    request: ModelRequest, weights: str, cancel: threading.Event
) -> Generator[Progress, None, EmbeddingModel]:
    """The model of one side (in the worker): pretrained (the copy a task already holds, see
    ``ModelRequest.load_steps``), or the architecture's random initialisation: its build is named (h-optimus-0's
    takes ~40 s on a CPU) and a Cancel pressed meanwhile stops the task once it is built."""
    if weights == WEIGHTS[0]:
        return (yield from request.load_steps(cancel))
    yield Progress(0, 0, f"building {request.source} (random init)")
    if request.model is not None:
        model = random_init(request.model)
    else:  # the spec alone (registry entry or checkpoint config.json): no weights are read, a hub model works offline
        model = random_model(resolve_spec(request.source), resolve_device(request.device))
    raise_if_cancelled(cancel, f"Cancelled while building {request.source} (random init).")
    return model
