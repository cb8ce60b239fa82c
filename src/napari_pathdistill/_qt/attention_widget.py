"""Teacher vs student attention widget: side-by-side heatmaps (napari grid mode), difference and agreement."""

from __future__ import annotations

from typing import Any

import napari
import numpy as np
from magicgui.widgets import CheckBox, ComboBox, Container, FloatSlider, Label, PushButton, SpinBox

from napari_pathdistill._qt._layers import SlideLayerChooser, slide_path, upsert_layer
from napari_pathdistill._qt._model_picker import ModelPicker
from napari_pathdistill._qt._workers import TaskRunner, error_message
from napari_pathdistill.inference.attention_pairs import AttentionPair, iter_attention_pair

REGIONS = ("tiles in current view", "whole slide")


def view_bbox_level0(layer: napari.layers.Image) -> tuple[float, float, float, float]:
    """The part of a (multiscale) slide layer on screen as (x0, y0, x1, y1) in level-0 pixels."""
    corners = np.asarray(layer.corner_pixels, dtype=float)[:, -2:]  # (2, (row, col)) at the data level
    if layer.multiscale:
        corners = corners * np.asarray(layer.downsample_factors[layer.data_level])[-2:]
    (r0, c0), (r1, c1) = corners
    return float(c0), float(r0), float(c1), float(r1)


def _display_limits(mosaic: np.ndarray) -> tuple[float, float]:
    """(0, 95th percentile) of a map mosaic: a few peak tokens (common in small ViTs) would otherwise leave the
    rest of a min-max scaled map black. Only the display changes; the layer data stay the [0, 1] maps."""
    finite = mosaic[np.isfinite(mosaic)]
    hi = float(np.percentile(finite, 95)) if finite.size else 1.0
    return (0.0, hi if hi > 0 else 1.0)


class AttentionWidget(Container):
    """Dock widget: teacher and student attention on the same tiles, side by side with a linked camera.

    Args:
        viewer: the napari viewer (injected by npe2).
    """

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        self.viewer = viewer
        self.slide = SlideLayerChooser(viewer)
        self.teacher = ModelPicker(label="teacher", default="h-optimus-0")
        self.student = ModelPicker(label="student", default="pathdistill-student")
        self.region = ComboBox(label="tiles", choices=REGIONS, value=REGIONS[0])
        self.n_tiles = SpinBox(label="max tiles", value=16, min=1, max=1024)
        self.mode = ComboBox(label="mode", choices=("last", "rollout"), value="last")
        self.head = SpinBox(label="head (-1 = mean)", value=-1, min=-1, max=63)
        self.opacity = FloatSlider(label="opacity", value=0.6, min=0.0, max=1.0)
        self.side_by_side = CheckBox(text="side by side (grid)", value=True)
        self.run_button = PushButton(text="Compute attention")
        self.cancel_button = PushButton(text="Cancel")
        self.status = Label(value="")
        self.summary = Label(value="")
        widgets = [self.slide, self.teacher, self.student, self.region, self.n_tiles, self.mode, self.head,
                   self.opacity, self.side_by_side, self.run_button, self.cancel_button, self.status, self.summary]  # fmt: skip
        super().__init__(widgets=widgets, labels=True)
        self.runner = TaskRunner(self.run_button, self.cancel_button, self.status)
        self.run_button.changed.connect(self.run)
        self.opacity.changed.connect(self._set_opacity)
        self.result: AttentionPair | None = None
        self._map_layers: list[napari.layers.Layer] = []

    def run(self) -> None:
        """Start computing both attention maps (handler of the Compute button)."""
        try:
            layer = self.slide.value
            path = slide_path(layer)
            teacher, student = self.teacher.request(), self.student.request()
        except Exception as exc:
            napari.utils.notifications.show_error(error_message(exc, "Attention"))
            return
        bbox = view_bbox_level0(layer) if self.region.value == REGIONS[0] else None
        head = None if self.head.value < 0 else int(self.head.value)
        kw = {"bbox": bbox, "n_tiles": self.n_tiles.value, "mode": self.mode.value, "head": head}

        def factory(cancel: Any) -> Any:
            return iter_attention_pair(teacher.load(), student.load(), path, cancel=cancel, **kw)

        self.runner.start(factory, self.show_result, "Attention")

    def show_result(self, pair: AttentionPair) -> None:
        """Add teacher, student and difference maps and the per-tile agreement (main thread)."""
        self.result = pair
        slide = self.slide.value
        units = getattr(slide, "units", None)
        geo = {
            "scale": pair.scale,
            "translate": pair.translate,
            "opacity": self.opacity.value,
            "units": units,
            "blending": "additive",  # low attention stays transparent over the slide
        }
        maps = {"colormap": "inferno", "gamma": 0.5}  # gamma lifts peaky ViT maps
        teacher = upsert_layer(self.viewer, "image", pair.teacher_mosaic, "teacher attention",
                               contrast_limits=_display_limits(pair.teacher_mosaic), **maps, **geo)  # fmt: skip
        student = upsert_layer(self.viewer, "image", pair.student_mosaic, "student attention",
                               contrast_limits=_display_limits(pair.student_mosaic), **maps, **geo)  # fmt: skip
        diff = upsert_layer(self.viewer, "image", pair.difference, "attention difference (student - teacher)",
                            colormap="PiYG", contrast_limits=(-1, 1), visible=False, **{**geo, "blending": "translucent"})  # fmt: skip
        tiles = upsert_layer(self.viewer, "labels", pair.tile_index, "attention tiles", opacity=0.0,
                             scale=pair.tile_scale, translate=pair.tile_translate, units=units, features=pair.feature_table())  # fmt: skip
        self._map_layers = [teacher, student, diff]
        agree = pair.agreement[np.isfinite(pair.agreement)]
        mean = f"{agree.mean():.3f}" if len(agree) else "n/a"
        med = f"{np.median(agree):.3f}" if len(agree) else "n/a"
        self.summary.value = f"{len(pair.coords)} tiles; agreement (Pearson r) mean {mean}, median {med}"
        if self.side_by_side.value and slide is not None:
            self._arrange_grid(slide, teacher, student, tiles)

    def _arrange_grid(self, slide: Any, teacher: Any, student: Any, tiles: Any) -> None:
        """Grid mode, stride 2: cell 1 = slide + teacher map, cell 2 = view of the slide + student map; one camera."""
        view_name = f"{slide.name} (student view)"
        view = upsert_layer(self.viewer, "image", slide.data, view_name, multiscale=slide.multiscale,
                            rgb=slide.rgb, scale=slide.scale, translate=slide.translate, units=slide.units)  # fmt: skip
        layers = self.viewer.layers
        # napari >= 0.9 groups layers by index // stride from the bottom of the list (hidden groups skipped):
        # indices 0-1 -> first cell, 2-3 -> second cell; other layers go to later cells.
        for target, layer in enumerate((slide, teacher, view, student)):
            layers.move(layers.index(layer), target)
        tiles.visible = False
        self.viewer.grid.stride = 2
        self.viewer.grid.enabled = True

    def _set_opacity(self, value: float) -> None:
        for layer in self._map_layers:
            if layer in self.viewer.layers:
                layer.opacity = value
