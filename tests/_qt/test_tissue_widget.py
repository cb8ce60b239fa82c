"""Tissue widget on the real CMU-1-Small-Region slide: mask + tile-id grid aligned with the slide in um."""

from __future__ import annotations

import os
from pathlib import Path

import napari
import numpy as np
import pytest

from napari_pathdistill._qt.tissue_widget import TissueWidget
from napari_pathdistill.wsi.tile_raster import tile_of_value

pytestmark = pytest.mark.napari

DOCS_IMAGES = Path(__file__).resolve().parents[2] / "docs" / "images"


def test_run_adds_aligned_layers(make_napari_viewer, qtbot, cmu_svs: Path, open_slide, wait_for) -> None:
    """Run on the real slide; check the layers against the core result and the slide geometry."""
    viewer = make_napari_viewer()
    slide = open_slide(viewer, cmu_svs)
    widget = TissueWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Tissue and tile grid")
    widget.slide.value = slide
    widget.min_tissue.value = 0.5
    widget.run()
    wait_for(widget)
    res = widget.result
    assert res is not None, widget.status.value
    mask_layer = viewer.layers[f"{slide.name} tissue"]
    tiles = viewer.layers[f"{slide.name} tiles"]
    assert isinstance(tiles, napari.layers.Labels) and f"{len(res.grid)} tiles" in widget.summary.value
    values = np.unique(tiles.data)
    assert (
        values[0] == 0
        and np.array_equal(tile_of_value(values[1:]), np.arange(len(res.grid)))
        and len(res.grid)
    )
    # the mask covers the slide exactly: its world extent equals the slide's (both in um)
    slide_extent = np.asarray(slide.extent.world)
    mask_extent = np.asarray(mask_layer.extent.world)
    np.testing.assert_allclose(mask_extent, slide_extent, atol=0.499 * res.mask.downsample)
    # every tile's cell in world um: top-left edge at its level-0 (x, y) times 0.499 um, side 224 * 0.5 um
    kpx = res.tile_raster.px_per_tile
    for k in (0, len(res.grid) // 2, len(res.grid) - 1):
        x, y = res.grid.coords[k]
        lo, hi = _cell_world_box(tiles, k, kpx)
        # (the grid's corners are rounded to whole level-0 px; the raster's cells are exactly 224.45 px apart)
        np.testing.assert_allclose(lo, (np.array([y, x]) - 0.5) * 0.499, atol=0.5 * 0.499)
        np.testing.assert_allclose(hi - lo, (112.0, 112.0), rtol=1e-6)
        # hovering the tile's centre shows its id and its features row (tile, x, y, tissue fraction)
        centre = (np.array([y, x]) + res.grid.size_level0 / 2) * 0.499
        value = tiles.get_value(centre, world=True)
        assert tile_of_value(value) == k
        row = tiles.features.iloc[value]
        assert row["tile"] == k and (row["x"], row["y"]) == (x, y)
        assert row["tissue_fraction"] == pytest.approx(res.grid.tissue_fraction[k])
        status = str(tiles.get_status(centre, world=True))
        # exact integers in the status bar (a features dict made them float64: "x: 3.14e+03")
        assert f"tile: {k}," in status and f"x: {x}," in status and f"y: {y}," in status, status
    # hovering glass (label 0) names no tile: no "tile: -1" or "nan" in the status bar
    status = tiles.get_status((-0.4 * 0.499, -0.4 * 0.499), world=True)["coordinates"]
    assert tiles.get_value((-0.4 * 0.499, -0.4 * 0.499), world=True) == 0
    assert "tile" not in status and "nan" not in status, status
    # tissue fraction of every kept tile, recomputed from the Labels layer data, is >= min tissue (nearly)
    m = mask_layer.data.astype(bool)
    ds = res.mask.downsample
    for (tx, ty), frac in zip(res.grid.coords, res.grid.tissue_fraction, strict=True):
        box = m[round(ty / ds) : round((ty + res.grid.size_level0) / ds),
                round(tx / ds) : round((tx + res.grid.size_level0) / ds)]  # fmt: skip
        assert abs(box.mean() - frac) < 1e-6 and frac >= 0.5
    if os.environ.get("PATHDISTILL_SAVE_SCREENSHOTS"):
        from skimage.io import imsave

        viewer.window._qt_window.resize(1400, 900)
        viewer.window.show()
        viewer.reset_view()
        qtbot.wait(500)
        DOCS_IMAGES.mkdir(parents=True, exist_ok=True)
        imsave(DOCS_IMAGES / "tissue_widget.png", viewer.screenshot(canvas_only=False, flash=False))


def _cell_world_box(layer, tile: int, px_per_tile: int) -> tuple[np.ndarray, np.ndarray]:
    """World (y, x) of the top-left and bottom-right edges of the raster cell of ``tile`` (gap included)."""
    rows, cols = np.nonzero((layer.data > 0) & (tile_of_value(layer.data) == tile))
    gap = 1 if px_per_tile >= 4 else 0  # the cell's first row and column are the gap drawing the grid lines
    lo = np.array([rows.min() - gap, cols.min() - gap]) - 0.5
    hi = np.array([rows.max(), cols.max()]) + 0.5
    return np.asarray(layer.data_to_world(lo)), np.asarray(layer.data_to_world(hi))


def test_rerun_replaces_layers_and_reports_bad_input(
    make_napari_viewer, qtbot, cmu_svs, open_slide, wait_for
):
    viewer = make_napari_viewer()
    slide = open_slide(viewer, cmu_svs)
    widget = TissueWidget(viewer)
    widget.slide.value = slide
    for _ in range(2):
        widget.run()
        wait_for(widget)
    assert [layer.name for layer in viewer.layers].count(f"{slide.name} tiles") == 1
    widget.min_tissue.value = 1.0
    widget.mpp.value = 4.0  # 896 um tiles: none is fully tissue
    widget.run()
    wait_for(widget)
    assert f"{slide.name} tiles" not in viewer.layers and "min tissue" in widget.summary.value


def test_associated_images_button(make_napari_viewer, qtbot, cmu_svs, open_slide) -> None:
    viewer = make_napari_viewer()
    slide = open_slide(viewer, cmu_svs)
    widget = TissueWidget(viewer)
    widget.slide.value = slide
    widget.show_associated()
    names = [layer.name for layer in viewer.layers]
    assert f"{slide.name} [label]" in names and f"{slide.name} [macro]" in names


def test_um_px_override_on_a_slide_without_mpp_stays_aligned(
    make_napari_viewer, qtbot, tcga_svs: Path, open_slide, wait_for
) -> None:
    """TCGA slide without MPP is shown in pixels; with a 0.25 um/px override the tiles are cut at 0.5 um/px
    (448 level-0 px) and the mask and outlines still land on the slide's pixels."""
    viewer = make_napari_viewer()
    slide = open_slide(viewer, tcga_svs)
    assert tuple(slide.scale[-2:]) == (1.0, 1.0)
    widget = TissueWidget(viewer)
    widget.slide.value = slide
    widget.mpp_override.value = 0.25
    widget.run()
    wait_for(widget)
    res = widget.result
    assert res is not None and len(res.grid) > 0, widget.status.value
    assert res.grid.size_level0 == pytest.approx(448.0)
    mask_layer = viewer.layers[f"{slide.name} tissue"]
    np.testing.assert_allclose(
        np.asarray(mask_layer.extent.world), np.asarray(slide.extent.world), atol=res.mask.downsample
    )
    tiles = viewer.layers[f"{slide.name} tiles"]
    k = len(res.grid) // 2
    x, y = res.grid.coords[k]
    lo, hi = _cell_world_box(tiles, k, res.tile_raster.px_per_tile)
    np.testing.assert_allclose(lo, np.array([y, x]) - 0.5, atol=1e-6)
    np.testing.assert_allclose(hi - lo, (448.0, 448.0), rtol=1e-6)


def test_threshold_preview_redraws_the_mask_live_on_pale_ihc(
    make_napari_viewer, qtbot, os2_pair, open_slide, wait_for
) -> None:
    """OS-2 Ki67 (pale IHC at 0.23 um/px): the default threshold marks most of the field; the preview follows
    the threshold at once (same layer, new pixels) and Run builds the grid with it."""
    viewer = make_napari_viewer()
    slide = open_slide(viewer, os2_pair[0])
    widget = TissueWidget(viewer)
    widget.slide.value = slide
    widget.start_preview()
    wait_for(widget)
    assert widget.preview is not None, widget.status.value
    layer = viewer.layers[f"{slide.name} tissue"]
    default = layer.data.astype(bool).mean()
    assert default > 0.6 and "% of the slide is tissue" in widget.summary.value
    np.testing.assert_allclose(np.asarray(layer.extent.world), np.asarray(slide.extent.world),
                               atol=0.23 * widget.preview.downsample)  # fmt: skip
    widget.threshold.value = 0.4  # only the darker (DAB / dense) parts
    assert viewer.layers[f"{slide.name} tissue"] is layer
    strict = layer.data.astype(bool).mean()
    assert strict < default - 0.2 and f"{100 * strict:.0f} %" in widget.summary.value
    assert not (layer.data.astype(bool) & ~widget.preview.mask(0.08).mask).any()  # a subset of the default
    widget.threshold.value = 0.08
    widget.run()
    wait_for(widget)
    res = widget.result
    assert res is not None and len(res.grid) > 0.5 * 16  # 224 px tiles at 0.5 um/px: 16 on the 500 um field
    np.testing.assert_array_equal(viewer.layers[f"{slide.name} tissue"].data.astype(bool), res.mask.mask)


def test_results_go_on_the_slide_the_run_started_on(
    make_napari_viewer, qtbot, cmu_svs: Path, tcga_svs: Path, open_slide, wait_for
) -> None:
    """Choosing another slide while the run works does not move its mask and grid onto that slide: they keep the
    run's slide name, units and geometry (before the fix: named after, and placed on, the newly chosen one)."""
    viewer = make_napari_viewer()
    cmu, tcga = open_slide(viewer, cmu_svs), open_slide(viewer, tcga_svs)
    widget = TissueWidget(viewer)
    widget.slide.value = cmu
    widget.run()
    # while it runs, Preview is off as Run is (pressing it raised "a task is already running" into Qt)
    assert not widget.preview_button.enabled and not widget.run_button.enabled
    widget.slide.value = tcga  # while the worker runs
    wait_for(widget)
    assert widget.preview_button.enabled and widget.run_button.enabled and not widget.cancel_button.enabled
    assert widget.result is not None and widget.result.path == cmu_svs, widget.status.value
    names = [layer.name for layer in viewer.layers]
    assert f"{cmu.name} tissue" in names and f"{cmu.name} tiles" in names
    assert not any(name.startswith(tcga.name) and name != tcga.name for name in names)
    mask, tiles = viewer.layers[f"{cmu.name} tissue"], viewer.layers[f"{cmu.name} tiles"]
    np.testing.assert_allclose(np.asarray(mask.extent.world), np.asarray(cmu.extent.world), atol=0.499 * 64)
    assert tuple(str(u) for u in tiles.units) == tuple(str(u) for u in cmu.units)
    assert mask.colormap.map(np.array([1]))[0][1] > 0.8  # the mask is drawn green, not napari's dark label 1


def test_a_slide_removed_while_its_run_works_gets_no_layers(
    make_napari_viewer, qtbot, cmu_svs: Path, open_slide, wait_for, monkeypatch
) -> None:
    """Removed mid-run: the run's mask and grid are not added over nothing (before: added, named after whichever
    slide the box showed next), and the user is told why."""
    import napari.utils.notifications as notifications

    infos: list[str] = []
    monkeypatch.setattr(notifications, "show_info", infos.append)
    viewer = make_napari_viewer()
    cmu = open_slide(viewer, cmu_svs)
    widget = TissueWidget(viewer)
    widget.slide.value = cmu
    widget.run()
    viewer.layers.remove(cmu)
    wait_for(widget)
    assert widget.result is not None and len(viewer.layers) == 0
    assert any(f"'{cmu.name}' was removed from the viewer while it ran" in m for m in infos), infos
    assert (
        widget.status.value == f"Tissue: not shown ('{cmu.name}' was removed while it ran)"
    )  # was 'Tissue: done'


def test_mask_and_grid_leave_with_their_slide_layer(
    make_napari_viewer, qtbot, cmu_svs: Path, tcga_svs: Path, open_slide, wait_for
) -> None:
    """Removing the slide layer left '<slide> tissue' and '<slide> tiles' over nothing (or over the next slide),
    and a threshold change after it drew the previewed mask again. They now go with it; another slide's stay."""
    viewer = make_napari_viewer()
    tcga, cmu = open_slide(viewer, tcga_svs), open_slide(viewer, cmu_svs)
    widget = TissueWidget(viewer)
    widget.slide.value = tcga
    widget.run()
    wait_for(widget)
    widget.slide.value = cmu
    widget.start_preview()
    wait_for(widget)
    widget.run()
    wait_for(widget)
    names = [layer.name for layer in viewer.layers]
    assert f"{cmu.name} tissue" in names and f"{cmu.name} tiles" in names, widget.status.value
    kept = [tcga.name, f"{tcga.name} tissue", f"{tcga.name} tiles"]
    viewer.layers.selection.active = viewer.layers[f"{cmu.name} tiles"]
    viewer.layers.remove(cmu)
    qtbot.waitUntil(lambda: [layer.name for layer in viewer.layers] == kept, timeout=30_000)
    widget.threshold.value = 0.3  # the preview's slide is gone: no mask drawn for it
    assert [layer.name for layer in viewer.layers] == kept


def test_mask_and_grid_stay_on_a_slide_with_non_square_pixels(
    make_napari_viewer, qtbot, cmu_svs: Path, open_slide, wait_for, tmp_path: Path
) -> None:
    """MPP-X 0.5, MPP-Y 0.505 (a 1 % anisotropy, tiled with the mean um/px): the mask covers the slide and the
    tiles' cells sit on their level-0 corners on both axes. Before, both layers were mapped onto the slide with
    MPP-X for the y axis too: the mask and the grid stood 1 % too tall (the mask's bottom 30 px below the slide's)."""
    import openslide
    import tifffile

    with openslide.OpenSlide(str(cmu_svs)) as s:
        rgb = np.asarray(s.read_region((0, 0), 0, s.dimensions).convert("RGB"))
    path = tmp_path / "aniso.ome.tif"
    tifffile.imwrite(path, rgb, tile=(256, 256), photometric="rgb", compression="zlib",
                     metadata={"PhysicalSizeX": 0.5, "PhysicalSizeY": 0.505})  # fmt: skip
    viewer = make_napari_viewer()
    slide = open_slide(viewer, path)
    assert tuple(slide.scale[-2:]) == pytest.approx((0.505, 0.5))
    widget = TissueWidget(viewer)
    widget.slide.value = slide
    widget.run()
    wait_for(widget)
    res = widget.result
    assert res is not None and len(res.grid) > 20, widget.status.value
    mask_layer, tiles = viewer.layers[f"{slide.name} tissue"], viewer.layers[f"{slide.name} tiles"]
    np.testing.assert_allclose(np.asarray(mask_layer.extent.world), np.asarray(slide.extent.world),
                               atol=0.505 * res.mask.downsample)  # fmt: skip
    for k in (0, len(res.grid) // 2, len(res.grid) - 1):
        x, y = res.grid.coords[k]
        lo, hi = _cell_world_box(tiles, k, res.tile_raster.px_per_tile)
        # in level-0 px of the slide layer (its world / its scale): the tile's corner and its square side
        lo_px, hi_px = lo / (0.505, 0.5), hi / (0.505, 0.5)
        np.testing.assert_allclose(lo_px, np.array([y, x]) - 0.5, atol=0.5)
        np.testing.assert_allclose(hi_px - lo_px, (res.grid.size_level0,) * 2, rtol=1e-6)


def test_tile_um_per_px_keeps_four_decimals(make_napari_viewer):
    """'tile um/px' had Qt's 2 decimals, which round the value itself (0.2527 -> 0.25): the grid was cut at another
    scale than the model's; four, as the other widgets' um/px fields (``_qt._layers.tile_mpp_box``)."""
    widget = TissueWidget(make_napari_viewer())
    widget.mpp.value = 0.2527
    assert widget.mpp.value == pytest.approx(0.2527)
    assert (widget.mpp.min, widget.mpp.max, widget.mpp.step) == (0.05, 64.0, 0.05)
