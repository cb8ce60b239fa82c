"""Attention widget on the real CMU slide: labelled grid cells, agreement report, head range from the model,
"tiles in view" from the camera, offline hub teacher failing fast in a wrapped status line."""

from __future__ import annotations

import numpy as np
import pytest

from napari_pathdistill._qt._labels import StatusLabel
from napari_pathdistill._qt.attention_widget import AttentionWidget, view_bbox_level0

pytestmark = pytest.mark.napari


def _whole_slide_widget(viewer, model, slide, max_tiles: int) -> AttentionWidget:
    """The widget with ``model`` on both sides, on the whole of ``slide``, at most ``max_tiles`` tiles."""
    widget = AttentionWidget(viewer)
    widget.teacher.set_model(model)
    widget.student.set_model(model)
    widget.slide.value = slide
    widget.region.value = "whole slide"
    widget.max_tiles.value = max_tiles
    return widget


def test_side_by_side_labelled_maps_and_agreement(
    make_napari_viewer, qtbot, cmu_svs, tiny_vit, open_slide, wait_for
):
    viewer = make_napari_viewer()
    slide = open_slide(viewer, cmu_svs)
    widget = _whole_slide_widget(viewer, tiny_vit, slide, max_tiles=6)
    widget.student_head.value = 1
    widget.run()
    wait_for(widget)
    pair = widget.result
    assert pair is not None, widget.status.value
    assert len(pair.coords) == 6
    # same model on both sides, teacher = head mean, student = head 1: different maps, still labelled apart
    teacher_name = "teacher last-block attention, head mean: tiny-vit"
    student_name = "student last-block attention, head 1: tiny-vit"
    layers = viewer.layers
    names = [layer.name for layer in layers]
    diff_name = "attention difference (student - teacher)"
    assert names == [slide.name, teacher_name, "attention tiles", f"{slide.name} (student view)", student_name,
                     diff_name]  # fmt: skip
    assert layers[teacher_name]._overlays["layer_name"].visible  # each grid cell shows its map's name
    assert viewer.grid.enabled and viewer.grid.stride == 3
    cells = [viewer.grid.position(i, layers) for i in range(5)]  # the difference (hidden) is in no cell
    assert cells[0] == cells[1] == cells[2] == (0, 0) and cells[3] == cells[4] == (0, 1)
    assert tuple(viewer.grid.actual_shape(layers)) == (1, 2)  # two cells: the tile points add none
    t = layers[teacher_name]
    assert t.blending == "translucent" and t.colormap.colors[0, 3] == 0 and t.colormap.colors[-1, 3] > 0.8
    assert tuple(t.contrast_limits) == (0, 1) and np.nanmax(t.data) <= 1
    # each cell has a colour bar (before: none, the colours were unexplained), clear of the name (top left)
    for name in (teacher_name, student_name, "attention difference (student - teacher)"):
        assert layers[name].colorbar.visible and layers[name].colorbar.position == "bottom_right"
    assert "percentile rank in the region" in widget.summary.value
    # the map's first pixel starts at the first tile's corner (level-0 -> um; tiles are read at whole pixels)
    mpp = slide.scale[-1]
    x0, y0 = pair.coords.min(0)
    np.testing.assert_allclose(t.translate[-1] - t.scale[-1] / 2, (x0 - 0.5) * mpp, atol=0.5 * mpp)
    np.testing.assert_allclose(t.translate[-2] - t.scale[-2] / 2, (y0 - 0.5) * mpp, atol=0.5 * mpp)
    tiles = layers["attention tiles"]
    np.testing.assert_allclose(tiles.features["pearson_r"].to_numpy(), pair.tile_r)
    centre = (pair.coords[0] + pair.tile_px_level0 / 2 - 0.5)[::-1] * mpp  # tile 0's centre, world um
    np.testing.assert_allclose(tiles.data_to_world(tiles.data[0]), centre)
    assert "Pearson r" in widget.summary.value and "chance = 0.10" in widget.summary.value
    assert f"{pair.overall_r:.2f}" in widget.summary.value
    assert pair.region_tiles > 6  # the whole slide has more tissue tiles; the summary says the cap cut them
    cut = f"6 of the region's {pair.region_tiles:,} tissue tiles: 'max tiles'"
    assert widget.summary.value.startswith(cut)
    assert widget.histogram.value.startswith("per-tile r  -1 [") and "(6 tiles)" in widget.histogram.value
    widget.opacity.value = 0.25
    assert t.opacity == pytest.approx(0.25)
    # the student side as its own random initialisation: a new, named layer replaces the old one
    widget.student_weights.value = "random init"
    widget.run()
    wait_for(widget)
    baseline = widget.result
    assert baseline is not pair and baseline.sources[1].model == "tiny-vit (random init)"
    names = [layer.name for layer in viewer.layers]
    assert (
        "student last-block attention, head 1: tiny-vit (random init)" in names and student_name not in names
    )
    assert baseline.overall_r < 0.99


def test_maps_stay_on_the_run_s_slide_and_fill_a_grid_cell(
    make_napari_viewer, qtbot, cmu_svs, tcga_svs, tiny_vit, open_slide, wait_for
):
    """Choosing another slide while the maps are computed leaves them on the run's slide (before: placed on the
    newly chosen one, in its units, beside its student view); the side-by-side cells are then fitted to the maps
    (before: the camera kept the single canvas's view, so a half-width cell cut the maps' right half)."""
    viewer = make_napari_viewer()
    cmu, tcga = open_slide(viewer, cmu_svs), open_slide(viewer, tcga_svs)
    widget = _whole_slide_widget(viewer, tiny_vit, cmu, max_tiles=40)
    viewer.fit_to_view(layers=[cmu])  # the slide fills the canvas: a grid cell is narrower than that
    widget.run()
    widget.slide.value = tcga  # while the worker runs
    wait_for(widget)
    assert widget.result is not None, widget.status.value
    teacher = viewer.layers["teacher last-block attention, head mean: tiny-vit"]
    names = [layer.name for layer in viewer.layers]
    assert names[:5] == [cmu.name, teacher.name, "attention tiles", f"{cmu.name} (student view)", "student "
                         "last-block attention, head mean: tiny-vit"] and f"{tcga.name} (student view)" not in names  # fmt: skip
    assert tuple(str(u) for u in teacher.units) == tuple(str(u) for u in cmu.units)
    shown = np.asarray(view_bbox_level0(viewer, cmu))  # what one grid cell shows of the slide, level-0 px
    (y0, x0), (y1, x1) = np.asarray(teacher.extent.world)[:, -2:] / cmu.scale[-1]
    assert shown[0] <= x0 and shown[1] <= y0 and shown[2] >= x1 and shown[3] >= y1, (shown, (x0, y0, x1, y1))
    fill = max((x1 - x0) / (shown[2] - shown[0]), (y1 - y0) / (shown[3] - shown[1]))
    assert fill > 0.8, fill  # fitted to the maps, not left at the whole slide's zoom
    widget.slide.value = tcga  # then the other slide: its maps replace CMU's, student view included
    widget.run()
    wait_for(widget)
    names = [layer.name for layer in viewer.layers]
    assert f"{tcga.name} (student view)" in names and f"{cmu.name} (student view)" not in names, names


def test_a_run_without_side_by_side_ends_the_grid_it_started(
    make_napari_viewer, qtbot, cmu_svs, tiny_vit, open_slide, wait_for
):
    """Unticking "side by side" and running again left grid mode on (stride 2), the student view removed: the
    student map then sat alone in the second cell over black, the teacher's in the first over the slide."""
    viewer = make_napari_viewer()
    slide = open_slide(viewer, cmu_svs)
    widget = _whole_slide_widget(viewer, tiny_vit, slide, max_tiles=4)
    widget.run()
    wait_for(widget)
    assert viewer.grid.enabled
    widget.side_by_side.value = False
    widget.run()
    wait_for(widget)
    assert widget.result is not None, widget.status.value
    assert not viewer.grid.enabled  # both maps over the one slide, in one canvas
    assert f"{slide.name} (student view)" not in [layer.name for layer in viewer.layers]
    viewer.grid.enabled = True  # the user's own grid is theirs: a run without side by side leaves it
    widget.run()
    wait_for(widget)
    assert viewer.grid.enabled


def test_head_range_is_the_model_s(make_napari_viewer, tiny_vit):
    widget = AttentionWidget(make_napari_viewer())
    assert widget.teacher.choice.value == "efficientnet-lite2-imagenet"  # the offline default
    assert not widget.teacher_head.enabled and widget.teacher_head.max == -1  # Grad-CAM has no heads
    assert widget.student.choice.value == "pathdistill-student"
    assert widget.student_head.enabled and widget.student_head.max == 2  # the bundled student has 3 heads
    # before: 0-63 accepted for any model, failing ~35 s later
    with pytest.raises(ValueError, match="outside of the allowed range"):
        widget.student_head.value = 63
    widget.student_head.native.setValue(63)  # typed in the spin box: clamped to the last head
    assert widget.student_head.value == 2
    widget.teacher.choice.value = "h-optimus-0"
    assert widget.teacher_head.enabled and widget.teacher_head.max == 23
    widget.student.set_model(tiny_vit)
    assert widget.student_head.max == 1 and widget.student_head.value == 1


def test_tiles_in_view_follow_the_camera(make_napari_viewer, cmu_svs, open_slide):
    viewer = make_napari_viewer(show=True)
    slide = open_slide(viewer, cmu_svs)
    viewer.reset_view()
    mpp = slide.scale[-1]
    centre = np.array([2200.0, 700.0])  # level-0 (y, x): lower left of the 2967 x 2220 slide
    viewer.scene.camera.center = tuple(centre * mpp)
    viewer.scene.camera.zoom = viewer.scene.camera.zoom * 2.5
    x0, y0, x1, y1 = view_bbox_level0(viewer, slide)
    np.testing.assert_allclose([(y0 + y1) / 2, (x0 + x1) / 2], centre, atol=1.0)
    h, w = viewer.canvas.viewbox_size(viewer.layers)
    np.testing.assert_allclose(
        [y1 - y0, x1 - x0], np.array([h, w]) / viewer.scene.camera.zoom / mpp, rtol=1e-6
    )
    assert x1 - x0 < 2220 and y1 - y0 < 2967  # a part of the slide, not all of it
    # grid mode: one cell is half the canvas, so half the width is in view
    viewer.add_image(np.zeros((4, 4)), name="other")
    viewer.grid.enabled = True
    gx0, _, gx1, _ = view_bbox_level0(viewer, slide)
    assert gx1 - gx0 < 0.6 * (x1 - x0)


def test_hub_teacher_without_weights_fails_fast_in_a_wrapped_status(
    make_napari_viewer, qtbot, cmu_svs, open_slide, wait_for, errors, monkeypatch, tmp_path
):
    import huggingface_hub.constants
    import timm

    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    # "fast" is what is done, not a stopwatch (CI runs at load 3-8): no hub download (~24 s of retries) is tried
    downloads, real_create = [], timm.create_model

    def create_model(name, *args, pretrained=False, **kwargs):
        if pretrained:
            downloads.append(name)
            raise RuntimeError("hub download tried")
        return real_create(name, *args, pretrained=pretrained, **kwargs)

    monkeypatch.setattr(timm, "create_model", create_model)
    viewer = make_napari_viewer(show=True)
    window = viewer.window._qt_window
    window.resize(1200, 800)
    slide = open_slide(viewer, cmu_svs)
    widget = AttentionWidget(viewer)
    viewer.window.add_dock_widget(widget, area="right")
    widget.slide.value = slide
    widget.teacher.choice.value = "h-optimus-0"
    qtbot.wait(50)
    width = window.width()
    widget.run()
    wait_for(widget)
    assert downloads == []  # failed on the unreachable hub before any download
    assert isinstance(widget.status, StatusLabel)
    assert "cannot be reached" in widget.status.value and str(tmp_path / "hub") in widget.status.value
    assert errors and "HF_HUB_OFFLINE" in errors[-1]
    qtbot.wait(50)
    assert window.width() == width
    assert widget.result is None


def test_wrong_layer_gives_notification(make_napari_viewer, errors):
    viewer = make_napari_viewer()
    widget = AttentionWidget(viewer)
    viewer.add_labels(np.zeros((8, 8), np.int32), name="not a slide")
    widget.run()
    assert errors and "No slide chosen" in errors[-1]


def test_slide_without_mpp_warns_and_the_override_cuts_um_tiles_on_its_pixels(
    make_napari_viewer, qtbot, tcga_svs, tiny_vit, open_slide, wait_for, monkeypatch
):
    import dataclasses

    import napari

    warned: list[str] = []
    monkeypatch.setattr(napari.utils.notifications, "show_warning", warned.append)
    viewer = make_napari_viewer()
    slide = open_slide(viewer, tcga_svs)  # no MPP: shown in level-0 pixels
    tiny_vit.spec = dataclasses.replace(tiny_vit.spec, mpp=16.0)
    widget = AttentionWidget(viewer)
    widget.teacher.set_model(tiny_vit)
    widget.student.set_model(tiny_vit)
    widget.slide.value = slide
    widget.region.value, widget.max_tiles.value, widget.overlap.value = "whole slide", 4, 0.0
    widget.run()
    wait_for(widget)
    assert len(warned) == 1 and "states no um/px" in warned[0] and "56 level-0 px" in warned[0]
    assert widget.result is not None and widget.result.tile_px_level0 == pytest.approx(56)
    widget.mpp_override.value = 2.0
    widget.run()
    wait_for(widget)
    pair = widget.result
    assert len(warned) == 1 and pair is not None and pair.tile_px_level0 == pytest.approx(448)
    t = viewer.layers["teacher last-block attention, head mean: tiny-vit"]
    x0, y0 = pair.coords.min(0)  # the map starts at the first tile's corner, in the slide layer's pixels
    np.testing.assert_allclose(t.translate[-1] - t.scale[-1] / 2, x0 - 0.5, atol=0.5)
    np.testing.assert_allclose(t.translate[-2] - t.scale[-2] / 2, y0 - 0.5, atol=0.5)
    assert t.scale[-1] * t.data.shape[-1] == pytest.approx(np.ptp(pair.coords[:, 0]) + 448, rel=0.05)


def test_maps_and_tiles_follow_a_moved_slide_layer(
    make_napari_viewer, qtbot, cmu_svs, tiny_vit, open_slide, wait_for
):
    """A slide layer moved beside another (translate in um): the maps and tile points went to where the slide
    would be unmoved, i.e. onto the other slide (Embed's maps were placed right)."""
    viewer = make_napari_viewer()
    slide = open_slide(viewer, cmu_svs)
    slide.translate = (0.0, 2000.0)  # um: beside where it was
    widget = _whole_slide_widget(viewer, tiny_vit, slide, max_tiles=6)
    widget.side_by_side.value = False
    widget.run()
    wait_for(widget)
    pair = widget.result
    assert pair is not None, widget.status.value
    teacher = viewer.layers["teacher last-block attention, head mean: tiny-vit"]
    tiles = viewer.layers["attention tiles"]
    mpp = slide.scale[-1]
    x0 = pair.coords[:, 0].min()
    np.testing.assert_allclose(
        teacher.translate[-1] - teacher.scale[-1] / 2, (x0 - 0.5) * mpp + 2000, atol=mpp
    )
    centre = pair.coords[0] + pair.tile_px_level0 / 2 - 0.5  # level-0 (x, y)
    np.testing.assert_allclose(tiles.data_to_world(tiles.data[0]), [centre[1] * mpp, centre[0] * mpp + 2000])
    np.testing.assert_allclose(slide.world_to_data(tiles.data_to_world(tiles.data[0]))[-2:], centre[::-1])


def test_maps_leave_with_their_slide_layer(
    make_napari_viewer, qtbot, cmu_svs, tcga_svs, tiny_vit, open_slide, wait_for
):
    """Removing the slide layer left its two maps, the difference, the tile points and the student view (a copy
    of the slide) in the viewer, in grid mode: the student map then sat alone in a cell over black. They now go
    with the slide, the grid the run switched on ends, and another slide's layers stay."""
    viewer = make_napari_viewer()
    tcga, cmu = open_slide(viewer, tcga_svs), open_slide(viewer, cmu_svs)
    widget = _whole_slide_widget(viewer, tiny_vit, cmu, max_tiles=4)
    widget.run()
    wait_for(widget)
    assert widget.result is not None and viewer.grid.enabled, widget.status.value
    results = [layer.name for layer in viewer.layers if layer not in (cmu, tcga)]
    assert len(results) == 5 and f"{cmu.name} (student view)" in results
    viewer.layers.selection.active = viewer.layers[results[1]]  # a map is the active layer, as after a look
    viewer.layers.remove(cmu)
    qtbot.waitUntil(lambda: [layer.name for layer in viewer.layers] == [tcga.name], timeout=30_000)
    assert not viewer.grid.enabled
    # "delete selected" with the slide and one of its maps selected: napari removes both itself, no error
    widget.slide.value = cmu = open_slide(viewer, cmu_svs)
    viewer.grid.enabled = True  # the user's own grid: it stays
    widget.run()
    wait_for(widget)
    viewer.layers.selection = {cmu, viewer.layers[f"{cmu.name} (student view)"]}
    viewer.layers.remove_selected()
    qtbot.waitUntil(lambda: [layer.name for layer in viewer.layers] == [tcga.name], timeout=30_000)
    assert viewer.grid.enabled


def test_hovering_a_tile_names_it_and_its_agreement(
    make_napari_viewer, qtbot, cmu_svs, tiny_vit, open_slide, wait_for
):
    """The "attention tiles" points had size 0: hovering found a tile only within ~1 um of its exact centre, so
    the per-tile r and top-10 % overlap could not be read anywhere on the maps (and another layer was active).
    Each tile now answers over the square of the map nearest its centre (drawn transparent, in the teacher's grid
    cell), and the layer is active after a run, so the status bar names the hovered tile."""
    viewer = make_napari_viewer()
    slide = open_slide(viewer, cmu_svs)
    widget = _whole_slide_widget(viewer, tiny_vit, slide, max_tiles=12)
    widget.run()
    wait_for(widget)
    pair = widget.result
    assert pair is not None, widget.status.value
    tiles = viewer.layers["attention tiles"]
    assert viewer.layers.selection.active is tiles and tiles.visible  # a hidden layer is not sliced: no hover
    assert viewer.grid.position(viewer.layers.index(tiles), viewer.layers) == (0, 0)  # with the teacher map
    assert pair.stride_level0 == pytest.approx(pair.tile_px_level0 / 2, rel=0.01)  # overlap 0.5
    mpp = slide.scale[-1]
    for k in range(len(pair.coords)):
        centre = (pair.coords[k] + pair.tile_px_level0 / 2 - 0.5)[::-1]  # level-0 (y, x)
        for dy, dx in ((0.3, 0.3), (-0.45, 0.2), (0.0, -0.45)):
            pos = (centre + np.array([dy, dx]) * pair.stride_level0) * mpp
            assert tiles.get_value(pos, world=True) == k, (k, dy, dx)
        status = tiles.get_status(tuple(centre * mpp + 0.3 * pair.stride_level0 * mpp), world=True)["value"]
        assert f"pearson_r: {pair.tile_r[k]:.3g}"[:14] in status, status


def test_the_last_run_s_agreement_goes_at_a_rerun_and_with_its_maps(
    make_napari_viewer, qtbot, cmu_svs, tiny_vit, open_slide, wait_for
):
    """The agreement text and r histogram of the last run stayed on screen under a new run's progress, after a
    cancel ("Attention cancelled" above the old r) and after their maps had left with the slide: numbers of maps
    no longer shown, read as the new run's."""
    viewer = make_napari_viewer()
    slide = open_slide(viewer, cmu_svs)
    widget = _whole_slide_widget(viewer, tiny_vit, slide, max_tiles=4)
    widget.run()
    wait_for(widget)
    assert "Pearson r" in widget.summary.value and "(4 tiles)" in widget.histogram.value, widget.status.value
    widget.run()
    assert widget.summary.value == widget.histogram.value == ""  # until this run's result
    widget.runner.cancel()
    wait_for(widget)
    assert widget.summary.value == widget.histogram.value == "", widget.status.value
    widget.run()
    wait_for(widget)
    assert "Pearson r" in widget.summary.value, widget.status.value
    viewer.layers.remove(slide)  # its maps go with it, and so do their numbers
    qtbot.waitUntil(lambda: len(viewer.layers) == 0, timeout=30_000)
    assert widget.summary.value == widget.histogram.value == ""


def test_removing_the_slide_stops_its_run(make_napari_viewer, qtbot, cmu_svs, tiny_vit, open_slide, wait_for):
    """Removing the slide layer of a running attention run left the run going to its end (209 s for 194 tiles
    with the shipped student on a CPU), its maps then dropped: the slide's removal now cancels it."""
    from napari_pathdistill.progress import Progress

    viewer = make_napari_viewer()
    slide = open_slide(viewer, cmu_svs)
    widget = _whole_slide_widget(viewer, tiny_vit, slide, max_tiles=200)
    widget.run()
    tiles: list[Progress] = []

    def remove_at_the_first_batch(item) -> None:  # on the main thread, while the worker goes on
        if isinstance(item, Progress) and item.stage == "attention":
            tiles.append(item)
            if len(tiles) == 1:
                viewer.layers.remove(slide)

    widget.runner.worker.yielded.connect(remove_at_the_first_batch)
    wait_for(widget)
    assert tiles and tiles[0].total > 2 * tiles[0].done > 0  # removed with most of the tiles to go
    assert widget.runner.cancel_event.is_set() and tiles[-1].done < tiles[0].total, [t.done for t in tiles]
    assert widget.status.value == f"Attention stopped: '{slide.name}' was removed while it ran"
    assert widget.result is None and len(viewer.layers) == 0


def test_the_hover_tiles_draw_nothing_over_the_teacher_map(
    make_napari_viewer, qtbot, cmu_svs, tiny_vit, open_slide, wait_for
):
    """The "attention tiles" points (the hover targets) were drawn with a white border of width 0, which the
    canvas still draws as a one-pixel outline: zoomed out over thousands of tiles (a whole 60k x 60k slide, or
    the CMU slide with small tiles in a grid cell) the teacher's cell turned white over the tissue, map hidden.
    They now draw nothing: the canvas is the same with them shown or hidden (and hover still names a tile)."""
    viewer = make_napari_viewer(show=True)
    slide = open_slide(viewer, cmu_svs)
    widget = _whole_slide_widget(viewer, tiny_vit, slide, max_tiles=400)
    widget.run()
    wait_for(widget)
    assert widget.result is not None, widget.status.value
    pair, mpp = widget.result, slide.scale[-1]
    viewer.scene.camera.zoom = 2 / (pair.tile_px_level0 * mpp)  # a tile spans 2 screen px, as on a big slide
    viewer.scene.camera.center = tuple((pair.coords.mean(0) + pair.tile_px_level0 / 2)[::-1] * mpp)
    tiles = viewer.layers["attention tiles"]
    qtbot.wait(200)
    shown = viewer.screenshot(canvas_only=True, flash=False)[..., :3].astype(int)
    tiles.visible = False
    qtbot.wait(200)
    hidden = viewer.screenshot(canvas_only=True, flash=False)[..., :3].astype(int)
    assert np.abs(shown - hidden).max() <= 2, np.abs(shown - hidden).mean()
    tiles.visible = True
    centre = (pair.coords[0] + pair.tile_px_level0 / 2 - 0.5)[::-1] * mpp
    assert tiles.get_value(tuple(centre), world=True) == 0


def test_a_view_of_glass_says_lower_min_tissue_and_the_widget_has_it(
    make_napari_viewer, qtbot, cmu_svs, tiny_vit, open_slide, wait_for, errors
):
    """A view without a tile of >= 50 % tissue failed with "pan/zoom onto tissue or lower 'min tissue'", but the
    Attention dock had no 'min tissue' (Embed and Similarity have one): the advice could not be followed. The dock
    now has it; 0 maps every tile of the view, glass included."""
    viewer = make_napari_viewer(show=True)
    slide = open_slide(viewer, cmu_svs)
    widget = AttentionWidget(viewer)
    widget.teacher.set_model(tiny_vit)
    widget.student.set_model(tiny_vit)
    widget.slide.value = slide
    mpp = slide.scale[-1]
    viewer.scene.camera.center = (200 * mpp, 2050 * mpp)  # level-0 (y, x): the glass at the upper right
    viewer.scene.camera.zoom = 400 / (300 * mpp)  # ~300 level-0 px across
    widget.run()
    wait_for(widget)
    assert errors and "lower 'min tissue'" in errors[-1] and widget.result is None, (
        widget.status.value,
        view_bbox_level0(viewer, slide),
    )
    widget.min_tissue.value = 0.0
    widget.run()
    wait_for(widget)
    pair = widget.result
    assert pair is not None, widget.status.value
    x0, y0, x1, y1 = view_bbox_level0(viewer, slide)
    centres, side = pair.coords + pair.tile_px_level0 / 2, pair.tile_px_level0
    assert len(pair.coords) and (centres >= np.array([x0, y0]) - side).all()
    assert (centres <= np.array([x1, y1]) + side).all(), (centres, (x0, y0, x1, y1))


def test_a_random_init_side_says_it_is_built_and_a_cancel_meanwhile_stops_after_it():
    """A 'random init' side is built from its spec in the worker (h-optimus-0: 1.1 B parameters, 42 s on a CPU)
    with no stage shown (the status stayed at 'Attention: starting...') and a Cancel pressed meanwhile went on
    to the other side's load (another 42 s): it now names the build, and a Cancel stops the task right after it."""
    import threading

    from napari_pathdistill._qt._model_picker import ModelRequest
    from napari_pathdistill._qt.attention_widget import _load
    from napari_pathdistill.errors import Cancelled
    from napari_pathdistill.progress import Progress

    cancel = threading.Event()
    steps = _load(ModelRequest("pathdistill-student", "cpu"), "random init", cancel)
    first = next(steps)
    assert isinstance(first, Progress) and first.stage == "building pathdistill-student (random init)"
    cancel.set()  # pressed while it is built
    with pytest.raises(Cancelled, match="pathdistill-student"):
        next(steps)
    steps = _load(ModelRequest("pathdistill-student", "cpu"), "random init", threading.Event())
    next(steps)
    with pytest.raises(StopIteration) as done:
        next(steps)
    assert done.value.value.spec.name == "pathdistill-student (random init)"


def test_removing_the_student_view_ends_the_grid_the_run_started(
    make_napari_viewer, qtbot, cmu_svs, tiny_vit, open_slide, wait_for
):
    """Removing the "(student view)" layer (the slide's copy under the student map) left the grid on: the student
    map sat alone in the second cell over black (as it did when the slide left, before go_with_slide). The grid the
    run switched on now ends with it, both maps stay over the slide; a grid the user switched on stays."""
    viewer = make_napari_viewer()
    slide = open_slide(viewer, cmu_svs)
    widget = _whole_slide_widget(viewer, tiny_vit, slide, max_tiles=4)
    widget.run()
    wait_for(widget)
    assert widget.result is not None and viewer.grid.enabled, widget.status.value
    viewer.layers.remove(f"{slide.name} (student view)")
    assert not viewer.grid.enabled
    names = [layer.name for layer in viewer.layers]
    assert "student last-block attention, head mean: tiny-vit" in names and slide.name in names
    viewer.grid.enabled = True  # the user's own grid, before the rerun: it stays when the view leaves
    widget.run()
    wait_for(widget)
    assert f"{slide.name} (student view)" in [layer.name for layer in viewer.layers]
    viewer.layers.remove(f"{slide.name} (student view)")
    assert viewer.grid.enabled
