"""Cross-stain / cross-scanner similarity widget: register two slides, compare matched tiles, overlay cosine."""

from __future__ import annotations

from typing import Any

import napari
import numpy as np
from magicgui.widgets import ComboBox, Container, FloatSpinBox, PushButton, SpinBox
from napari.layers import Points

from napari_pathdistill._qt._dock import scroll_when_docked
from napari_pathdistill._qt._labels import RESULT_CHARS, status_label
from napari_pathdistill._qt._layers import (
    LayerChooser,
    LayerInputError,
    SlideLayerChooser,
    SlideRef,
    mpp_override_box,
    on_slide_layer,
    slide_path,
    slide_removed,
    stop_when_removed,
    tile_mpp_box,
)
from napari_pathdistill._qt._model_picker import ModelPicker, follow_spec, with_models
from napari_pathdistill._qt._upsert import go_with_slide, upsert_layer
from napari_pathdistill._qt._workers import TaskRunner
from napari_pathdistill.inference.pair_similarity import PairSimilarity, iter_pair_similarity
from napari_pathdistill.wsi.registration import checkerboard

#: how registered B is shown over A: half-transparent on top, or alternating squares of A and B
VIEW_MODES = ("blend", "checkerboard", "hidden")


def landmarks_level0(points: Points, slide: napari.layers.Image) -> np.ndarray:
    """Points of a landmark layer -> (M, 2) level-0 (x, y) pixels of ``slide`` (via world coordinates)."""
    world = np.array([points.data_to_world(p) for p in points.data]).reshape(-1, points.ndim)
    rc = np.array([slide.world_to_data(w) for w in world]).reshape(-1, slide.ndim)[:, -2:]
    return rc[:, ::-1].astype(np.float64)


class SimilarityWidget(Container):
    """Dock widget: per-tile cosine similarity of two registered slides of the same tissue.

    Args:
        viewer: the napari viewer (injected by npe2).
    """

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        self.viewer = viewer
        self.slide_a = SlideLayerChooser(viewer, label="slide A")
        self.slide_b = SlideLayerChooser(viewer, label="slide B")
        self.landmarks_a = LayerChooser(viewer, Points, label="landmarks A")
        self.landmarks_b = LayerChooser(viewer, Points, label="landmarks B")
        self.model = ModelPicker()
        self.tile_px = SpinBox(label="tile px", value=224, min=32, max=1024, step=16)
        self.mpp = tile_mpp_box()
        self.min_tissue = FloatSpinBox(label="min tissue", value=0.5, min=0.0, max=1.0, step=0.05)
        self.top_k = SpinBox(label="top-k", value=5, min=1, max=100)
        self.mpp_override = mpp_override_box(
            "both slides are tiled and registered in um (plain JPEG/PNG have none)"
        )
        self.view_mode = ComboBox(label="registered B on A", choices=list(VIEW_MODES), value="blend")
        self.view_mode.tooltip = (
            "B resampled into A's frame by the registration: 'blend' shows it half-transparent over A, "
            "'checkerboard' alternates squares of A and B (edges that continue across squares = good fit)."
        )
        self.run_button = PushButton(text="Register and compare")
        self.cancel_button = PushButton(text="Cancel")
        self.status = status_label()
        self.summary = status_label(max_chars=RESULT_CHARS)
        widgets = [self.slide_a, self.slide_b, self.landmarks_a, self.landmarks_b, self.model, self.tile_px,
                   self.mpp, self.min_tissue, self.top_k, self.mpp_override, self.view_mode, self.run_button, self.cancel_button, self.status,
                   self.summary]  # fmt: skip
        super().__init__(widgets=widgets, labels=True)
        scroll_when_docked(self)
        self.runner = TaskRunner(self.run_button, self.cancel_button, self.status)
        self.run_button.changed.connect(self.run)
        self.view_mode.changed.connect(self.show_registered)
        self.result: PairSimilarity | None = None
        self._slide: SlideRef | None = None  # slide A of the shown result
        follow_spec(self.model, self.tile_px, self.mpp)
        viewer.layers.events.inserted.connect(self._other_b, position="last")  # after the choosers' refresh
        self._other_b()

    def _other_b(self, _event: Any = None) -> None:
        """Slide B defaults to another slide than A: two slides open -> a pair to compare, not an error."""
        if self.slide_b.value is not None and self.slide_b.value is self.slide_a.value:
            others = [layer for layer in self.slide_b.choices or () if layer is not self.slide_a.value]
            if others:
                self.slide_b.value = others[0]

    def _landmarks(self) -> tuple[np.ndarray, np.ndarray] | None:
        pa, pb = self.landmarks_a.value, self.landmarks_b.value
        if pa is None and pb is None:
            return None
        if pa is None or pb is None:
            raise LayerInputError("Choose a landmark Points layer for both slides, or for neither.")
        if len(pa.data) != len(pb.data) or len(pa.data) < 3:
            raise LayerInputError(
                f"'{pa.name}' has {len(pa.data)} points and '{pb.name}' has {len(pb.data)}: manual registration "
                "needs the same number (>= 3) on each slide, placed in the same order."
            )
        return landmarks_level0(pa, self.slide_a.value), landmarks_level0(pb, self.slide_b.value)

    def run(self) -> None:
        """Start registration and comparison (handler of the Run button)."""
        try:
            path_a, path_b = slide_path(self.slide_a.value), slide_path(self.slide_b.value)
            if self.slide_a.value is self.slide_b.value:
                raise LayerInputError(
                    "Slide A and slide B are the same layer; choose two slides of the same tissue."
                )
            landmarks = self._landmarks()
            request = self.model.request()
        except Exception as exc:
            self.runner.say_error(exc, "Similarity")
            return
        tile_px, mpp, min_tissue = self.tile_px.value, self.mpp.value, self.min_tissue.value
        top_k, fallback_mpp = self.top_k.value, self.mpp_override.value or None

        def factory(cancel: Any) -> Any:
            return with_models(cancel, [request], lambda model: iter_pair_similarity(
                model, path_a, path_b, landmarks=landmarks, tile_px=tile_px, mpp=mpp, min_tissue=min_tissue,
                top_k=top_k, fallback_mpp=fallback_mpp, cancel=cancel))  # fmt: skip

        slide = SlideRef.of(self.slide_a.value)  # the overlays go on this slide, whatever is chosen meanwhile
        self.summary.value = ""  # the last pair's numbers are not this run's (a cancelled run left them)
        on_end = stop_when_removed(self.viewer, slide, self.runner, "Similarity")  # not B: A shows its result
        self.runner.start(factory, lambda r: self.show_result(r, slide, top_k), "Similarity", on_end=on_end)

    def _on_a(
        self, scale: Any, translate: Any, mpp_a: float
    ) -> tuple[tuple[float, float], tuple[float, float]]:
        """napari (scale, translate) of a result in um (``mpp_a`` um per A level-0 px) on slide A where its layer
        sits now (moved while the run worked, or since), else where it sat when the run started."""
        live = self._slide.layer(self.viewer) if self._slide is not None else None
        return on_slide_layer(live if live is not None else self._slide, scale, translate, mpp_a)

    def _names(self) -> tuple[str, str]:
        name = self._slide.name if self._slide is not None else "A"
        return f"{name} cosine to B", f"{name} registered B"

    def show_result(
        self, result: PairSimilarity, slide: SlideRef | None = None, top_k: int | None = None
    ) -> None:
        """Overlay the per-tile cosine (with a colour bar) and registered B on slide A; show the metrics.

        Args:
            result: the computed comparison.
            slide: slide A's layer it was computed on (default: the chosen one).
            top_k: the k asked for (the summary says when the pair's tile count lowered it).
        """
        self.result = result
        if slide_removed(self.viewer, slide, "Similarity", self.status):
            return
        if slide is None and self.slide_a.value is not None:
            slide = SlideRef.of(self.slide_a.value)
        self._slide = slide
        scale, translate = self._on_a(result.scale, result.translate, result.mpp_a)
        cos_name, _ = self._names()
        layer = upsert_layer(self.viewer, "image", result.overlay, cos_name, colormap="viridis",
                             contrast_limits=(-1.0, 1.0) if result.cosine.min() < 0 else (0.0, 1.0), opacity=0.6,
                             scale=scale, translate=translate, units=slide.units if slide else None)  # fmt: skip
        layer.colorbar.visible = True
        self.show_registered()
        names = self._names()  # they leave with slide A
        go_with_slide(self.viewer, slide, [lay for lay in self.viewer.layers if lay.name in names])
        self.viewer.layers.selection.active = layer
        self.summary.value = summary_text(result, top_k)
        if doubt := result.transform.registration.doubt():
            napari.utils.notifications.show_warning(f"Similarity: {doubt}")

    def show_registered(self, _: Any = None) -> None:
        """Draw the ``<A> registered B`` layer in the chosen view mode (blend / checkerboard / hidden)."""
        result = self.result
        if result is None or result.registered is None:
            return
        view, mode = result.registered, self.view_mode.value
        data = checkerboard(view.a, view.b_in_a) if mode == "checkerboard" else view.b_in_a
        cos_name, name = self._names()
        layers = self.viewer.layers
        slide = self._slide
        scale, translate = self._on_a(view.scale, view.translate, result.mpp_a)
        if name in layers and layers[name].data.shape == data.shape:  # a toggle or a rerun: same layer
            layer = layers[name]
            layer.data = data
            layer.scale, layer.translate = scale, translate  # on slide A wherever it was moved since
        else:
            layer = upsert_layer(self.viewer, "image", data, name, rgb=True, scale=scale, translate=translate,
                                 units=slide.units if slide else None)  # fmt: skip
            if cos_name in layers:  # under the cosine overlay
                layers.move(layers.index(layer), layers.index(cos_name))
        layer.opacity = 1.0 if mode == "checkerboard" else 0.5
        layer.visible = mode != "hidden"


def summary_text(result: PairSimilarity, top_k: int | None = None) -> str:
    """The dock's summary: registration, tiles (moved inside B / dropped), mean cosine, top-k or why it is moot.
    ``top_k``: the k asked for; when the pair has too few tiles for it, the summary says k was lowered."""
    reg = result.transform.registration
    doubt = reg.doubt()
    tiles = (f"WARNING: {doubt} " if doubt else "") + f"{len(result.cosine)} matched tiles"
    extra = [f"{result.moved_inside} moved inside B's edge"] if result.moved_inside else []
    extra += [f"{result.dropped} outside B dropped"] if result.dropped else []
    if result.b_resampled:
        extra.append("B's tiles resampled through the registration: it turns or stretches them")
    if extra:
        tiles += f" ({', '.join(extra)})"
    method = f"{reg.method} (B mirrored)" if reg.mirrored else reg.method
    text = f"{tiles}; registration {method}, NCC {reg.ncc:.2f}; mean cosine {result.mean_cosine:.3f}; "
    if top_k is not None and result.k < top_k:
        text += f"top-{top_k} lowered to top-{result.k} (the {2 * len(result.cosine)} pooled tiles have {result.k} neighbours each); "
    if result.topk_note:
        return text + f"top-{result.k} accuracy {result.topk_accuracy:.3f} NOT MEANINGFUL: {result.topk_note}"
    return text + f"top-{result.k} accuracy {result.topk_accuracy:.3f} (chance {result.topk_chance:.2f})"
