"""Dock widget "Slide metadata": the facts of the selected slide layer, its associated images and ICC colour.

A thin magicgui Container: it follows the active layer, reopens the slide (cheap: no pixels are read) and shows
:func:`napari_pathdistill.wsi.metadata.metadata_rows`; a slide without MPP is highlighted ("no MPP: shown in
pixels"). One button per associated image adds it as a layer; "Convert to sRGB (ICC)" replaces the slide
layer's data in place by levels converted with the slide's ICC profile (unchecked: the raw levels again).
Labels word-wrap and never widen the dock. It also warns once when a slide in pixels joins layers in physical
units: napari keeps every layer's own units, but its one scale bar then shows no unit.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import napari
from magicgui.widgets import CheckBox, Container, Label, PushButton
from napari.layers import Layer
from napari.utils.notifications import show_error, show_info, show_warning

from napari_pathdistill._qt._dock import scroll_when_docked
from napari_pathdistill._qt._layers import is_slide_layer, slide_path
from napari_pathdistill._qt._upsert import upsert_layer
from napari_pathdistill.errors import PathDistillError
from napari_pathdistill.wsi.metadata import SlideMetadata, metadata_rows, slide_metadata

ROWS = (
    "file",
    "backend",
    "vendor",
    "scanner",
    "objective",
    "MPP",
    "channels",
    "levels",
    "associated",
    "ICC profile",
    "pixel values",
    "scan date",
)
#: rows shown only when the slide has them (a multiplex slide's channels, an SVS's scan date, the range a
#: 12-bit slide is stretched from: ``wsi.metadata``'s extra rows)
OPTIONAL_ROWS = ("channels", "pixel values", "scan date")
NO_SLIDE = "Select a slide layer (opened with the napari-pathdistill reader) to see its metadata."
#: above the rows while another kind of layer (a map, points, an array) is selected: whose facts they are
OTHER_LAYER = "'{active}' is not a slide layer: showing slide '{slide}'."
NO_MPP_STYLE = "background-color: #ffd54f; color: #202020; font-weight: bold; padding: 2px;"
MIXED_UNITS = (
    "{names} has no MPP and is shown in pixels; the other layers keep their own units ({units}), but napari's "
    "scale bar shows no unit while layers in pixels and in physical units are open together. The analysis widgets' "
    "'slide um/px override' only makes their tiles be cut at the right um/px; the slide layer and the maps drawn "
    "on it stay in pixels, because the file states no MPP. Close one of them to get a scale bar with a unit."
)


def _compact(label: Label) -> Label:
    """Word-wrapping label that never asks for more width than the dock has (long names break at _-./)."""
    from qtpy.QtWidgets import QSizePolicy

    label.native.setWordWrap(True)
    label.native.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
    label.native.setMinimumWidth(40)
    return label


#: longest run of characters left without a break opportunity in a file name (a DICOM UID has 38 digits)
_MAX_RUN = 12


def _breakable(text: str) -> str:
    """``text`` with zero-width spaces after ``_-./`` and inside longer runs (every :data:`_MAX_RUN` characters),
    so a QLabel can wrap file names without spaces, DICOM UIDs (``1.2.826.0...46702941076792458794464453066648``)
    included."""
    for ch in "_-./":
        text = text.replace(ch, ch + "\u200b")
    return re.sub(rf"([^\s\u200b]{{{_MAX_RUN}}})(?=[^\s\u200b])", "\\1\u200b", text)


def mixed_units_notice(viewer: napari.viewer.Viewer) -> str | None:
    """The notice for slide layers in pixels next to layers in physical units, None when units agree."""
    px = [lay for lay in viewer.layers if is_slide_layer(lay) and str(lay.units[-1]) == "pixel"]
    physical = {str(lay.units[-1]) for lay in viewer.layers if str(lay.units[-1]) != "pixel"}
    if not px or not physical:
        return None
    return MIXED_UNITS.format(
        names=", ".join(f"'{lay.name}'" for lay in px), units=", ".join(sorted(physical))
    )


def _right_edge(viewer: Any, slide_name: str, name: str) -> float:
    """World x where the associated image ``name`` of ``slide_name`` goes: where it is if shown (it is replaced
    in place), else after the associated images of that slide already shown, plus a gap (not over them); 0
    when none is shown."""
    from napari_pathdistill._reader import ASSOCIATED_SPACING

    prefix, edges = f"{slide_name} [", []
    if f"{prefix}{name}]" in viewer.layers:
        return float(viewer.layers[f"{prefix}{name}]"].translate[-1])
    for layer in viewer.layers:
        if layer.name.startswith(prefix):
            width = layer.data.shape[1] * layer.scale[-1]
            edges.append(layer.translate[-1] + width * ASSOCIATED_SPACING)
    return max(edges, default=0.0)


class MetadataWidget(Container):
    """File, backend, vendor, objective, MPP, levels, associated images and ICC profile of the active slide."""

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        self._viewer = viewer
        self.hint = _compact(Label(value=NO_SLIDE))
        self.rows = {name: _compact(Label(value="", label=name)) for name in ROWS}
        self.buttons: Container = Container(layout="horizontal", labels=False, label="add as layer")
        self.srgb = CheckBox(value=False, text="Convert to sRGB (ICC)", enabled=False)
        super().__init__(widgets=[self.hint, *self.rows.values(), self.buttons, self.srgb])
        scroll_when_docked(self)
        self.layer: Layer | None = None
        self.meta: SlideMetadata | None = None
        self._mixed_noticed = False
        self.srgb.changed.connect(self.set_srgb)
        viewer.layers.selection.events.active.connect(self._on_active)
        viewer.layers.events.inserted.connect(self._on_inserted)
        viewer.layers.events.removed.connect(self._on_removed)
        self._on_active()

    def _on_active(self, _event: Any = None) -> None:
        layer = self._viewer.layers.selection.active
        if layer is not None and is_slide_layer(layer):
            self.show_layer(layer)
        elif self.layer is None or self.layer not in self._viewer.layers:
            # another kind of layer active (an associated image, a map): the last slide shown while it is open,
            # else the topmost slide layer (``view --associated all`` leaves the last associated image active)
            slides = [lay for lay in self._viewer.layers if is_slide_layer(lay)]
            self.show_layer(slides[-1] if slides else None)
        else:
            self._say_which()

    def _on_inserted(self, _event: Any = None) -> None:
        notice = mixed_units_notice(self._viewer)
        if notice and not self._mixed_noticed:
            self._mixed_noticed = True
            show_warning(notice)

    def _on_removed(self, _event: Any = None) -> None:
        if self.layer is not None and self.layer not in self._viewer.layers:
            self._on_active()

    def show_layer(self, layer: Layer | None) -> None:
        """Display the facts of ``layer``'s slide (None: the hint); errors become notifications."""
        self.layer, self.meta = layer, None
        if layer is not None:
            try:
                from napari_pathdistill.wsi import open_pyramid

                with open_pyramid(slide_path(layer)) as pyr:
                    meta = slide_metadata(pyr)
            except PathDistillError as exc:
                show_error(str(exc))
            else:
                color = layer.metadata.get("pathdistill", {}).get("color", "raw")
                self.meta = dataclasses.replace(meta, color=color)
        self._render()

    def _render(self) -> None:
        meta = self.meta
        self._say_which()
        values = dict(metadata_rows(meta)) if meta is not None else {}
        for name, label in self.rows.items():
            label.value = _breakable(values.get(name, "")) if name == "file" else values.get(name, "")
            label.visible = meta is not None and (name not in OPTIONAL_ROWS or name in values)
        self.rows["MPP"].native.setStyleSheet(NO_MPP_STYLE if meta is not None and not meta.has_mpp else "")
        self.buttons.clear()
        for name in meta.associated if meta is not None else ():
            button = PushButton(text=name, tooltip=f"add the {name} image as a layer beside the slide")
            button.changed.connect(lambda _v=None, n=name: self.add_associated(n))
            self.buttons.append(button)
        self.buttons.visible = bool(meta is not None and meta.associated)
        ours = self.layer is not None and "pathdistill" in self.layer.metadata
        with self.srgb.changed.blocked():
            self.srgb.value = meta is not None and meta.color == "srgb"
        self.srgb.enabled = bool(meta is not None and meta.icc_profile and ours and not meta.channels)
        self.srgb.visible = meta is not None

    def _say_which(self) -> None:
        """The hint: :data:`NO_SLIDE` without facts; whose facts they are while another layer is selected (a map
        or an array read as 'no MPP, not stated' facts of its own); hidden while the shown slide, or one of its
        associated images (label, macro, thumbnail), is selected."""
        active, slide = self._viewer.layers.selection.active, self.layer
        # != not 'is not': a docked widget's viewer is napari's proxy, whose layers are proxies of the layers
        if (
            self.meta is not None
            and slide is not None
            and active is not None
            and active != slide
            # an associated image of the shown slide (the reader names it '<slide> [label]') has its facts
            and not (active.name.startswith(f"{slide.name} [") and active.name.endswith("]"))
        ):
            self.hint.value, self.hint.visible = (
                OTHER_LAYER.format(active=active.name, slide=slide.name),
                True,
            )
        else:
            self.hint.value, self.hint.visible = NO_SLIDE, self.meta is None

    def add_associated(self, name: str) -> None:
        """Add the slide's associated image ``name`` (label, macro, thumbnail) as a layer beside it."""
        from napari_pathdistill._reader import associated_layers
        from napari_pathdistill.wsi import open_pyramid

        try:
            with open_pyramid(slide_path(self.layer)) as pyr:
                layers = associated_layers(pyr, [name], _right_edge(self._viewer, pyr.path.name, name))
        except PathDistillError as exc:
            show_error(str(exc))
            return
        for data, kwargs, _ in layers:
            upsert_layer(self._viewer, "image", data, **kwargs)

    def set_srgb(self, on: bool) -> None:
        """Replace the slide layer's levels by ICC->sRGB converted ones (``on``) or by the raw ones."""
        from napari_pathdistill.wsi import open_pyramid

        layer = self.layer
        if layer is None or "pathdistill" not in layer.metadata:
            return
        try:
            pyr = open_pyramid(slide_path(layer), color="srgb" if on else "raw")
        except PathDistillError as exc:
            show_error(str(exc))
            self._render()  # unticks the box again
            return
        layer.data = pyr.to_dask()  # the arrays keep the file open for as long as the layer shows them
        layer.metadata["pathdistill"]["color"] = pyr.color
        if self.meta is not None:
            self.meta = dataclasses.replace(self.meta, color=pyr.color)
        self._render()
        show_info(f"{layer.name}: {'converted to sRGB with its ICC profile' if on else 'raw colours'}.")
