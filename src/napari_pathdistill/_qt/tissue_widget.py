"""Dock widget "Tissue and tile grid": tissue mask and kept tiles (two Labels layers) aligned on a slide layer.

The tiles layer is a raster of tile labels (``wsi.tile_raster.tile_id_raster``): cells in two colours in a
checkerboard with 1 px gaps, multiscale for a large grid so that it reads right at every zoom, and hovering a
cell shows its tile's row of ``features`` (tile, x, y, tissue fraction).

A thin magicgui Container: Run calls :func:`napari_pathdistill.wsi.tissue_grid.tissue_grid_steps` in a worker;
the result is placed in the slide layer's units (um with MPP). Never imports torch.
"""

from __future__ import annotations

from typing import Any

import napari
from magicgui.widgets import Container, FloatSpinBox, PushButton, SpinBox
from napari.utils.notifications import show_info

from napari_pathdistill._qt._dock import scroll_when_docked
from napari_pathdistill._qt._labels import status_label
from napari_pathdistill._qt._layers import (
    SlideLayerChooser,
    SlideRef,
    mpp_override_box,
    on_slide_layer,
    slide_path,
    slide_removed,
    tile_mpp_box,
)
from napari_pathdistill._qt._upsert import go_with_slide, upsert_layer
from napari_pathdistill._qt._workers import TaskRunner
from napari_pathdistill.errors import PathDistillError
from napari_pathdistill.wsi.tile_raster import raster_features
from napari_pathdistill.wsi.tissue import TISSUE_THRESHOLD
from napari_pathdistill.wsi.tissue_grid import (
    TissueGridResult,
    TissuePreview,
    tile_features,
    tissue_grid_steps,
    tissue_preview_steps,
)

#: RGBA of the tile cells: a checkerboard (neighbours in a row or a column always differ)
TILE_COLOURS = ((1.0, 0.85, 0.0, 1.0), (1.0, 0.45, 0.0, 1.0))


#: RGBA of the tissue mask's outline: green, which neither H&E (pink, purple) nor DAB (brown) nor glass has; an
#: outline (Labels ``contour``), so that the stain under the mask keeps its colours
TISSUE_COLOUR = (0.1, 0.9, 0.3, 1.0)


def mask_colormap() -> Any:
    """The tissue mask's colours: 0 transparent, 1 :data:`TISSUE_COLOUR` (napari's default label 1 is a dark
    brown that vanishes on H&E)."""
    from napari.utils.colormaps import CyclicLabelColormap

    return CyclicLabelColormap(colors=[(0.0, 0.0, 0.0, 0.0), TISSUE_COLOUR], background_value=0)


def tile_colormap() -> Any:
    """Cyclic colours for tile ids 1..N (0 transparent): a small texture whatever N (a DirectLabelColormap of
    100k ids needs numba in napari 0.9)."""
    from napari.utils.colormaps import CyclicLabelColormap

    return CyclicLabelColormap(colors=[(0.0, 0.0, 0.0, 0.0), *TILE_COLOURS], background_value=0)


class TissueWidget(Container):
    """Choose a slide layer, tile size, um/px and minimum tissue fraction; Run adds mask and grid layers."""

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        self._viewer = viewer
        self.slide = SlideLayerChooser(viewer)
        self.tile_px = SpinBox(value=224, min=16, max=4096, label="tile px")
        self.mpp = tile_mpp_box("tile um/px", max=64.0, step=0.05)
        self.min_tissue = FloatSpinBox(value=0.5, min=0.0, max=1.0, step=0.05, label="min tissue")
        self.threshold = FloatSpinBox(
            value=TISSUE_THRESHOLD, min=0.0, max=3.0, step=0.01, label="tissue threshold",
            tooltip="Optical density (sum over R, G, B, relative to the glass) above which a pixel is tissue: "
            "glass ~0.03, pale IHC 0.1-0.3, H&E 0.5-1.5. After 'Preview', changing it redraws the mask at once.",
        )  # fmt: skip
        self.preview_button = PushButton(text="Preview tissue mask")
        self.mpp_override = mpp_override_box("its mask and tile grid are computed in um")
        self.run_button = PushButton(text="Run")
        self.cancel_button = PushButton(text="Cancel")
        self.associated_button = PushButton(text="Show label / macro images")
        self.status = status_label()
        self.summary = status_label()
        super().__init__(
            widgets=[self.slide, self.tile_px, self.mpp, self.min_tissue, self.threshold, self.mpp_override,
                     self.preview_button, self.run_button, self.cancel_button, self.associated_button, self.status, self.summary],
        )  # fmt: skip
        scroll_when_docked(self)
        self.runner = TaskRunner(
            self.run_button, self.cancel_button, self.status, also=(self.preview_button,)
        )
        self.result: TissueGridResult | None = None
        self.preview: TissuePreview | None = None
        self._preview_slide: SlideRef | None = None  # the slide layer the preview was computed on
        self.run_button.changed.connect(self.run)
        self.preview_button.changed.connect(self.start_preview)
        self.threshold.changed.connect(self.show_preview)
        self.associated_button.changed.connect(self.show_associated)

    def run(self, _: Any = None) -> None:
        """Start tissue detection + tile grid on the chosen slide (errors become notifications)."""
        try:
            path = slide_path(self.slide.value)
        except PathDistillError as exc:
            self.runner.say_error(exc, "Tissue")
            return
        kw: dict[str, Any] = {
            "tile_px": int(self.tile_px.value),
            "mpp": float(self.mpp.value),
            "min_tissue": float(self.min_tissue.value),
            "threshold": float(self.threshold.value),
            "fallback_mpp": float(self.mpp_override.value) or None,
        }
        slide = SlideRef.of(self.slide.value)  # results go on this slide, whatever is chosen meanwhile
        self.runner.start(lambda cancel: tissue_grid_steps(path, cancel=cancel, **kw),
                          lambda result: self._apply(result, slide), "Tissue")  # fmt: skip

    def start_preview(self, _: Any = None) -> None:
        """Compute the slide's tissue maps once (worker); the mask then follows 'tissue threshold' live."""
        try:
            path = slide_path(self.slide.value)
        except PathDistillError as exc:
            self.runner.say_error(exc, "Tissue")
            return
        fallback = float(self.mpp_override.value) or None
        factory = lambda cancel: tissue_preview_steps(path, fallback_mpp=fallback, cancel=cancel)  # noqa: E731
        slide = SlideRef.of(self.slide.value)
        self.runner.start(factory, lambda preview: self._apply_preview(preview, slide), "Tissue preview")

    def _apply_preview(self, preview: TissuePreview, slide: SlideRef) -> None:
        if slide_removed(self._viewer, slide, "Tissue preview", self.status):
            return
        self.preview, self._preview_slide = preview, slide
        self.show_preview()

    def show_preview(self, _: Any = None) -> None:
        """Redraw the previewed slide's tissue layer at the current threshold (main thread, < 1 s)."""
        preview, slide = self.preview, self._preview_slide
        if preview is None or slide is None or slide.layer(self._viewer) is None:
            self.preview = self._preview_slide = None  # its slide was removed: its mask went with it
            return
        mask = preview.mask(float(self.threshold.value))
        self._show_mask(mask.mask, preview.mask_scale, preview.mask_translate, preview.slide_mpp, slide)
        self.summary.value = (
            f"preview: {100 * mask.mask.mean():.0f} % of the slide is tissue at threshold "
            f"{self.threshold.value:.2f}; Run builds the tile grid with it"
        )

    def _show_mask(
        self, mask: Any, scale: Any, translate: Any, slide_mpp: tuple[float, float] | None, slide: SlideRef
    ) -> None:
        # results are in um when the slide has an MPP (its file's or the override), per axis; its layer may be in px
        u = slide_mpp or 1.0
        units = slide.units or (("um", "um") if slide_mpp else ("pixel", "pixel"))
        layer_name = f"{slide.name} tissue"
        layers = self._viewer.layers
        if layer_name in layers and layers[layer_name].data.shape == mask.shape:  # a threshold change
            layers[layer_name].data = mask.astype("uint8")
            return
        sc, tr = on_slide_layer(slide, scale, translate, u)
        layer = upsert_layer(self._viewer, "labels", mask.astype("uint8"), layer_name, scale=sc, translate=tr,
                             units=units, opacity=0.9, colormap=mask_colormap())  # fmt: skip
        layer.contour = 2  # not an add_labels argument
        go_with_slide(self._viewer, slide, [layer])  # it leaves with the slide layer it lies on

    def _apply(self, result: TissueGridResult, slide: SlideRef) -> None:
        """Show the mask and the tile grid of ``result`` on the slide layer it was computed from."""
        self.result = result
        if slide_removed(self._viewer, slide, "Tissue", self.status):
            return
        # the grid's um are level-0 px times its one um/px (square tiles: the mean of MPP-Y and MPP-X)
        u = result.grid.slide_mpp or 1.0
        units = slide.units or result.units
        self._show_mask(result.mask.mask, result.mask_scale, result.mask_translate, result.slide_mpp, slide)
        tiles_name = f"{slide.name} tiles"
        if tiles_name in self._viewer.layers:
            self._viewer.layers.remove(tiles_name)
        if len(result.grid) == 0:
            self.summary.value = "No tile reaches 'min tissue': lower it or check the tissue layer."
            return
        raster = result.tile_raster
        sc, tr = on_slide_layer(slide, raster.scale, raster.translate, u)
        tiles = upsert_layer(self._viewer, "labels", raster.data, tiles_name, scale=sc, translate=tr, units=units,
                             multiscale=raster.multiscale, opacity=0.45, colormap=tile_colormap(),
                             features=raster_features(tile_features(result.grid)))  # fmt: skip
        go_with_slide(self._viewer, slide, [tiles])
        grid = result.grid
        res = f"{grid.mpp} um/px" if grid.mpp else "level-0 px (no MPP)"
        self.summary.value = f"{len(grid)} tiles of {grid.tile_px} px at {res}, read from level {grid.level}"

    def show_associated(self, _: Any = None) -> None:
        """Add the slide's associated images (label, macro, ...) beside it, on request."""
        from napari_pathdistill._reader import associated_layers
        from napari_pathdistill.wsi import open_pyramid

        try:
            with open_pyramid(slide_path(self.slide.value)) as pyr:
                layers = associated_layers(pyr, [n for n in pyr.associated_image_names() if n != "thumbnail"])
        except PathDistillError as exc:
            self.runner.say_error(exc, "Tissue")
            return
        if not layers:
            show_info("This slide has no label or macro image.")
        for data, kwargs, _ in layers:
            upsert_layer(self._viewer, "image", data, **kwargs)
