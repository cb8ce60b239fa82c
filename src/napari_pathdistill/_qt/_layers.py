"""Layer helpers shared by the widgets: choosers listing our slide layers, slide references and placement (the
add-or-update of result layers: ``_qt._upsert``)."""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import napari
import numpy as np
from magicgui.widgets import ComboBox, FloatSpinBox
from napari.layers import Image, Labels, Layer

from napari_pathdistill.errors import LayerInputError


def _plain_image_path(layer: Layer) -> Path | None:
    """The file of an RGB JPEG/PNG layer opened by napari's own reader (``layer.source.path``), else None."""
    from napari_pathdistill.wsi._image_backend import SUFFIXES

    src = getattr(getattr(layer, "source", None), "path", None)
    if not isinstance(layer, Image) or not layer.rgb or not src or Path(src).suffix.lower() not in SUFFIXES:
        return None
    return Path(src)


def is_slide_layer(layer: Layer) -> bool:
    """Whether ``layer`` is an image layer opened by our reader (it carries the slide path), or a plain
    RGB JPEG/PNG opened from a file (the core reads such small images too; they have no um/px)."""
    meta = layer.metadata.get("pathdistill", {}) if isinstance(layer, Image) else {}
    return (isinstance(meta, dict) and bool(meta.get("path"))) or _plain_image_path(layer) is not None


def on_slide_layer(
    slide: Layer | SlideRef | None, scale: Any, translate: Any, units_per_px: float | tuple[float, float]
) -> tuple[tuple[float, float], tuple[float, float]]:
    """napari (scale, translate) of a result computed in slide units (level-0 px times ``units_per_px``: the
    core's ``Pyramid.mpp`` of the slide, from its file or the widget's um/px override; 1 for pixels; one value
    or (y, x)) on ``slide``'s world frame, wherever the layer was moved or scaled.

    The identity for slides opened by our reader with their MPP and left in place; for a slide layer shown in
    pixels (no MPP in the file) whose result used an um/px override, it maps the um geometry back onto the pixels.
    """
    if slide is None:
        return tuple(scale), tuple(translate)  # type: ignore[return-value]
    u = np.broadcast_to(np.asarray(units_per_px, dtype=np.float64), (2,))
    f = [float(s / v) for s, v in zip(slide.scale[-2:], u, strict=True)]
    t0 = slide.translate[-2:]
    return (scale[0] * f[0], scale[1] * f[1]), (translate[0] * f[0] + t0[0], translate[1] * f[1] + t0[1])


@dataclass(frozen=True)
class SlideRef:
    """The slide layer a run was started on, as it was then: its results are named and placed by this, whatever
    the chooser shows or whichever layer is removed while the run works.

    ``scale`` / ``translate`` / ``units`` are the layer's (last two axes); ``native`` the (y, x) scale our reader
    gives that slide (:func:`reader_scale`: the frame the core places its results in); :meth:`layer` is the
    layer itself while it is still in the viewer (for results that reuse its data), else None.
    """

    name: str
    scale: tuple[float, float]
    translate: tuple[float, float]
    units: Any
    _ref: Any = field(default=None, repr=False, compare=False)
    native: tuple[float, float] = (1.0, 1.0)

    @classmethod
    def of(cls, layer: Layer) -> SlideRef:
        """A snapshot of ``layer`` (a slide layer a widget is about to run on)."""
        scale, translate = tuple(layer.scale[-2:]), tuple(layer.translate[-2:])
        units = tuple(layer.units[-2:]) if getattr(layer, "units", None) is not None else None
        return cls(layer.name, scale, translate, units, weakref.ref(layer), reader_scale(layer))  # type: ignore[arg-type]

    def layer(self, viewer: napari.viewer.Viewer) -> Layer | None:
        """The slide layer if it is still in ``viewer``, else None."""
        layer = self._ref() if self._ref is not None else None
        return layer if layer is not None and layer in viewer.layers else None

    def place(
        self, scale: Any, translate: Any, viewer: napari.viewer.Viewer | None = None
    ) -> tuple[tuple[float, float], tuple[float, float]]:
        """napari (scale, translate) of a core result (placed on the slide as our reader opens it: ``native``
        scale, no translate) on this slide layer (:func:`on_slide_layer`): where the layer sits now while it is
        in ``viewer``, else where it sat at the snapshot."""
        layer = self.layer(viewer) if viewer is not None else None
        return on_slide_layer(layer if layer is not None else self, scale, translate, self.native)


def reader_scale(layer: Layer) -> tuple[float, float]:
    """The (y, x) scale our reader gives ``layer``'s slide: its file's level-0 um/px, else 1 (level-0 pixels, as
    for a slide whose file states none or a plain JPEG/PNG). The core places maps in that frame."""
    meta = layer.metadata.get("pathdistill", {})
    mpp = meta.get("mpp") if isinstance(meta, dict) else None
    return (float(mpp[0]), float(mpp[1])) if mpp is not None else (1.0, 1.0)


def slide_removed(
    viewer: napari.viewer.Viewer, slide: SlideRef | None, what: str, status: Any = None
) -> bool:
    """Whether the slide layer a run started on has left ``viewer`` meanwhile (then says so, in a notification and
    in the widget's ``status`` label when given, which read "<what>: done" before: its results, which would lie
    over nothing, are not shown). None (no run: results shown directly) counts as present."""
    if slide is None or slide.layer(viewer) is not None:
        return False
    from napari.utils.notifications import show_info

    show_info(f"{what}: '{slide.name}' was removed from the viewer while it ran; its results are not shown.")
    if status is not None:
        status.value = f"{what}: not shown ('{slide.name}' was removed while it ran)"
    return True


def stop_when_removed(viewer: napari.viewer.Viewer, slide: SlideRef, runner: Any, what: str) -> Any:
    """Cancel ``runner``'s task as soon as the slide layer it runs on leaves ``viewer``: a task whose results are
    only drawn on that slide (attention maps, a pair's similarity on slide A) would show nothing
    (:func:`slide_removed`), yet it ran on for minutes (a 194-tile attention run: 209 s after its slide was
    removed). Returns the ``on_end`` for ``TaskRunner.start``: it disconnects and says why the task stopped."""

    def on_removed(_event: Any = None) -> None:
        if runner.running and not runner.cancel_event.is_set() and slide.layer(viewer) is None:
            runner.cancel()

    viewer.layers.events.removed.connect(on_removed)

    def on_end() -> None:
        viewer.layers.events.removed.disconnect(on_removed)
        if runner.cancel_event.is_set() and slide.layer(viewer) is None:
            runner.status.value = f"{what} stopped: '{slide.name}' was removed while it ran"

    return on_end


def tile_mpp_box(label: str = "um/px", max: float = 100.0, step: float = 0.25) -> FloatSpinBox:
    """A widget's tile um/px field (0.5 at first): four decimals, as :func:`mpp_override_box`'s, because Qt's two
    round the value itself (a model's or scanner's 0.2527 um/px became 0.25, 0.125 became 0.13)."""
    box = FloatSpinBox(label=label, value=0.5, min=0.05, max=max, step=step)
    box.native.setDecimals(4)
    return box


def mpp_override_box(what: str = "its tiles are cut at the requested um/px") -> FloatSpinBox:
    """The widgets' "slide um/px override" field: the level-0 um/px of a slide whose file states none.

    Four decimals (scanners' MPPs are e.g. 0.2527 or 0.2265: two would be 1-2 % off), arrows step by 0.25;
    0 = none, and reads "none" (not "0.0000", a pixel size of zero). ``what`` completes the tooltip: what the value
    is used for.
    """
    box = FloatSpinBox(label="slide um/px override", value=0.0, min=0.0, max=100.0, step=0.25)
    box.native.setDecimals(4)
    box.native.setSpecialValueText("none")
    box.tooltip = (
        f"Level-0 um/px of a slide whose file states none (0.25 at 40x, 0.5 at 20x), so that {what}; a file's "
        "own MPP always wins. 0 = none."
    )
    return box


def no_mpp_note(layer: Any, override: float | None, tile_px: int, mpp: float) -> str | None:
    """The warning for embedding a slide layer whose file states no um/px without an override, else None."""
    meta = layer.metadata.get("pathdistill", {}) if layer is not None else {}
    if override or (isinstance(meta, dict) and meta.get("mpp")):
        return None
    return (
        f"{layer.name} states no um/px: its tiles are cut as {tile_px} level-0 px, not {tile_px} px at {mpp:g} "
        "um/px as the model expects. Set 'slide um/px override' if you know the scan resolution (0.25 at 40x, "
        "0.5 at 20x)."
    )


def slide_layers(viewer: napari.viewer.Viewer) -> list[Image]:
    """Image layers of ``viewer`` opened by the napari-pathdistill reader, in stacking order."""
    return [layer for layer in viewer.layers if is_slide_layer(layer)]


def map_layers(viewer: napari.viewer.Viewer) -> list[Labels]:
    """The map layers of the viewer (Labels with ``metadata["pathdistill"]["slide_map"]``), topmost first."""
    from napari_pathdistill.inference.slide_maps import SlideMap

    return [layer for layer in reversed(viewer.layers) if isinstance(layer, Labels)
            and isinstance(layer.metadata.get("pathdistill", {}).get("slide_map"), SlideMap)]  # fmt: skip


def slide_path(layer: Layer | None) -> Path:
    """The slide file behind a layer, or a clear :class:`LayerInputError`."""
    if layer is None:
        raise LayerInputError(
            "No slide chosen: open a whole-slide image with File > Open (napari-pathdistill reader), or a small "
            "JPEG/PNG, first."
        )
    if not isinstance(layer, Image):
        raise LayerInputError(
            f"Layer '{layer.name}' is a {type(layer).__name__} layer; choose a slide image layer."
        )
    plain = _plain_image_path(layer)
    if plain is not None:
        return plain
    if not is_slide_layer(layer):
        raise LayerInputError(
            f"Layer '{layer.name}' was not opened by the napari-pathdistill reader, so its slide file is unknown; "
            "open the slide with File > Open and choose the 'napari-pathdistill' reader."
        )
    return Path(layer.metadata["pathdistill"]["path"])


class SlideLayerChooser(ComboBox):
    """A combo box listing the slide layers of a viewer, kept current as layers are added/removed/renamed."""

    def __init__(self, viewer: napari.viewer.Viewer, label: str = "slide", **kwargs: Any) -> None:
        self._viewer = viewer
        super().__init__(label=label, choices=self._choices, nullable=False, **kwargs)
        events = viewer.layers.events
        for ev in (events.inserted, events.removed, events.moved):
            ev.connect(self._refresh)

    def _choices(self, _widget: Any = None) -> list[tuple[str, Image]]:
        return [(layer.name, layer) for layer in slide_layers(self._viewer)]

    def _refresh(self, _event: Any = None) -> None:
        self.reset_choices()


class LayerChooser(ComboBox):
    """A combo box listing the viewer's layers of one kind (e.g. Points for landmarks), with an empty entry."""

    def __init__(self, viewer: napari.viewer.Viewer, kind: type[Layer], label: str, **kwargs: Any) -> None:
        self._viewer, self._kind = viewer, kind
        super().__init__(label=label, choices=self._choices, nullable=True, **kwargs)
        events = viewer.layers.events
        for ev in (events.inserted, events.removed):
            # a bound method: napari holds it weakly (a lambda kept a closed dock alive)
            ev.connect(self._refresh)

    def _refresh(self, _event: Any = None) -> None:
        self.reset_choices()

    def _choices(self, _widget: Any = None) -> list[tuple[str, Layer]]:
        return [(layer.name, layer) for layer in self._viewer.layers if isinstance(layer, self._kind)]
