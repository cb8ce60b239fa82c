"""Embed widget on the real CMU-1-Small-Region slide with a tiny ViT: layers, alignment, features, clicks."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import time
from pathlib import Path

import numpy as np
import pytest

from napari_pathdistill._qt._model_picker import CHECKPOINT
from napari_pathdistill._qt.embed_widget import EmbedWidget
from napari_pathdistill.models.checkpoint import save_checkpoint
from napari_pathdistill.models.testing import tiny_model

pytestmark = pytest.mark.napari
DOCS_IMAGES = Path(__file__).resolve().parents[2] / "docs" / "images"


@pytest.fixture(autouse=True)
def _cache_in_tmp(monkeypatch, tmp_path):
    """Feature files go to the test's folder, not the user cache (the widget's default comes from the env)."""
    monkeypatch.setenv("PATHDISTILL_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture
def embedded(make_napari_viewer, qtbot, cmu_svs, tiny_vit, open_slide, wait_for):
    viewer = make_napari_viewer()
    slide = open_slide(viewer, cmu_svs)
    widget = EmbedWidget(viewer)
    widget.model.set_model(tiny_vit)
    widget.tile_px.value = tiny_vit.spec.tile_px
    widget.mpp.value = 2.0  # ~6 tiles of 448 um on this 1.1 x 1.5 mm region: fast on CPU
    widget.min_tissue.value = 0.1
    widget.k.value = 3
    widget.top_k.value = 2
    widget.slide.value = slide
    widget.run()
    wait_for(widget)
    assert widget.result is not None, widget.status.value
    return viewer, slide, widget


def test_layers_are_aligned_and_carry_features(embedded):
    viewer, slide, widget = embedded
    res = widget.result
    n = len(res.features)
    labels = viewer.layers[f"{slide.name} clusters"]
    emap = viewer.layers[f"{slide.name} embedding map"]
    for layer in (labels, emap):
        np.testing.assert_allclose(layer.scale[-2:], res.scale)
        np.testing.assert_allclose(layer.translate[-2:], res.translate)
    # each tile's centre in world units (um) is its level-0 centre (pixel-centre convention) times um/px
    mpp = np.asarray(slide.scale[-2:])
    size = res.grid.size_level0
    expected = (res.grid.coords[:, ::-1] + (size - 1) / 2) * mpp
    np.testing.assert_allclose(res.tile_centers(), expected, atol=mpp.max())
    # the raster holds one label per tile (tile * K + cluster) and the features table one row per label, found
    # by its "index" column (row 0 = background): hovering any tile shows that tile's row (its id, cluster,
    # position), and it is drawn in its cluster's colour by a K-colour cyclic colormap
    table = labels.features
    cols = ["index", "tile", "x", "y", "cluster", "tissue_fraction"]
    assert len(table) == n + 1 and list(table.columns[:6]) == cols
    assert type(labels.colormap).__name__ == "CyclicLabelColormap" and len(labels.colormap.colors) == 3 + 1
    k, palette = int(res.clusters.max()), {}
    for i in range(n):
        r, c = np.argwhere(res.index_image == i + 1)[0]
        value = int(labels.data[r, c])
        assert value == i * k + res.clusters[i]
        row = labels._label_index[value]  # napari's lookup of a hovered label's features row
        assert table["tile"][row] == i and table["cluster"][row] == res.clusters[i] and row == i + 1
        colour = tuple(np.round(labels.get_color(value), 4))
        assert palette.setdefault(int(res.clusters[i]), colour) == colour  # one colour per cluster
    assert len(set(palette.values())) == len(palette)  # different clusters, different colours
    assert "cluster 1" in widget.legend.value or "cluster 2" in widget.legend.value


def test_hover_status_names_the_tile_under_the_cursor_and_its_cluster(embedded):
    viewer, slide, widget = embedded
    res = widget.result
    labels = viewer.layers[f"{slide.name} clusters"]
    centers = res.tile_centers()
    for i in (0, len(centers) // 2, len(centers) - 1):  # several tiles, in several clusters
        status = labels.get_status(tuple(centers[i]), world=True)
        text = status["coordinates"]  # e.g. "[12, 40]: 7; tile: 6, x: ..., cluster: 2, ..."
        assert re.search(rf"\btile: {i},", text) and re.search(rf"\bcluster: {res.clusters[i]},", text), text
    glass = np.argwhere(res.index_image == 0)[0]  # a raster cell without a tile (label 0)
    status = labels.get_status(tuple(labels.data_to_world(glass)), world=True)["coordinates"]
    assert "tile" not in status and "cluster" not in status and "nan" not in status, status


def test_click_shows_most_similar_tiles(embedded):
    viewer, slide, widget = embedded
    res = widget.result
    labels = viewer.layers[f"{slide.name} clusters"]
    query = len(res.features) - 1
    row, col = labels.world_to_data(res.tile_centers()[query])[-2:]
    assert res.tile_at(row, col) == query
    points = widget.show_similar(query)
    f = res.features / np.linalg.norm(res.features, axis=1, keepdims=True)
    cos = f @ f[query]
    cos[query] = -np.inf
    expected = np.argsort(-cos, kind="stable")[:2]
    np.testing.assert_array_equal(points.features["tile"].to_numpy()[1:], expected)
    np.testing.assert_allclose(points.features["cosine"].to_numpy()[1:], cos[expected], rtol=1e-5)
    np.testing.assert_allclose(points.data[0], res.tile_centers()[query])


def test_bad_input_and_cancel(make_napari_viewer, qtbot, cmu_svs, tiny_vit, errors, open_slide, wait_for):
    viewer = make_napari_viewer()
    widget = EmbedWidget(viewer)
    widget.run()  # no slide layer at all
    assert errors and "No slide chosen" in errors[-1]
    slide = open_slide(viewer, cmu_svs)
    widget.model.set_model(tiny_vit)
    widget.slide.value = slide
    widget.tile_px.value = tiny_vit.spec.tile_px
    widget.min_tissue.value = 1.0
    widget.mpp.value = 1800 * 0.499 / tiny_vit.spec.tile_px  # one 1800 px tile, not 100 % tissue: empty grid
    widget.run()
    wait_for(widget)
    assert "tissue" in errors[-1].lower() and "min tissue" in errors[-1]
    assert [layer.name for layer in viewer.layers] == [slide.name]  # the empty layers of the press are gone
    widget.mpp.value = 8000 * 0.499 / tiny_vit.spec.tile_px  # a tile larger than the slide
    widget.run()
    wait_for(widget)
    assert "smaller than one tile" in errors[-1]
    n_layers = len(viewer.layers)
    widget.min_tissue.value, widget.mpp.value = 0.0, 0.5
    widget.run()
    widget.runner.cancel()
    wait_for(widget)
    assert len(viewer.layers) == n_layers and "cancel" in widget.status.value


def _canvas_point(viewer, world_yx):
    """Qt widget coordinates of a 2D world point (napari's camera: centre + zoom in screen px per world unit)."""
    from qtpy.QtCore import QPoint

    canvas = viewer.window._qt_viewer.canvas.native
    cy, cx = viewer.camera.center[-2:]
    z = viewer.camera.zoom
    x = (world_yx[1] - cx) * z + canvas.width() / 2
    y = (world_yx[0] - cy) * z + canvas.height() / 2
    return canvas, QPoint(round(x), round(y))


def test_real_mouse_clicks_pick_tiles_and_drags_do_not(embedded, qtbot):
    from qtpy.QtCore import Qt

    viewer, slide, widget = embedded
    viewer.window._qt_window.show()
    viewer.reset_view()
    qtbot.wait(50)
    centers = widget.result.tile_centers()
    for query in (0, len(centers) - 1):  # the second click lands while the points layer is the newest layer
        canvas, pos = _canvas_point(viewer, centers[query])
        qtbot.mouseClick(canvas, Qt.MouseButton.LeftButton, pos=pos)
        points = viewer.layers["similar tiles"]
        assert points.features["tile"].iloc[0] == query
        assert viewer.layers.selection.active is viewer.layers[f"{slide.name} clusters"]
    before = viewer.layers["similar tiles"]
    assert len([layer for layer in viewer.layers if layer.name == "similar tiles"]) == 1  # updated in place
    canvas, pos = _canvas_point(viewer, centers[0])
    qtbot.mousePress(canvas, Qt.MouseButton.LeftButton, pos=pos)
    qtbot.mouseMove(canvas, pos + type(pos)(40, 40))
    qtbot.mouseRelease(canvas, Qt.MouseButton.LeftButton, pos=pos + type(pos)(40, 40))
    assert viewer.layers["similar tiles"] is before  # a pan is not a click


def test_tile_px_and_um_px_follow_the_picked_model(
    make_napari_viewer, cmu_svs, open_slide, wait_for, tmp_path
):
    """The fields show the chosen model's training resolution: the shipped student's 224 px at 0.5 um/px, then a
    checkpoint's 112 px at 1 um/px; a value the user typed stays when another model is picked, and the run cuts
    tiles with what the fields show."""
    tiny = tiny_model("vit", tile_px=112)
    ckpt = save_checkpoint(tiny.module, dataclasses.replace(tiny.spec, mpp=1.0), tmp_path / "ckpt112")
    viewer = make_napari_viewer()
    widget = EmbedWidget(viewer)
    assert widget.model.choice.value == "pathdistill-student" and widget.model.spec().tile_px == 224
    assert (widget.tile_px.value, widget.mpp.value) == (224, 0.5)
    widget.model.choice.value = CHECKPOINT
    assert (widget.tile_px.value, widget.mpp.value) == (224, 0.5)  # no checkpoint chosen yet: unchanged
    widget.model.checkpoint.value = ckpt / "model.safetensors"
    assert (widget.tile_px.value, widget.mpp.value) == (112, 1.0)
    widget.mpp.value = 2.0  # the user's own um/px: it stays
    widget.model.choice.value = "h0-mini"
    assert (widget.tile_px.value, widget.mpp.value) == (224, 2.0)
    widget.model.choice.value = CHECKPOINT
    assert (widget.tile_px.value, widget.mpp.value) == (112, 2.0)
    widget.model.device.value = "cpu"
    widget.slide.value = open_slide(viewer, cmu_svs)
    widget.min_tissue.value, widget.k.value = 0.1, 2
    widget.run()
    wait_for(widget)
    res = widget.result
    assert res is not None, widget.status.value
    assert (res.grid.tile_px, res.grid.mpp, res.model_name) == (112, 2.0, tiny.spec.name)


def test_results_stay_bound_to_the_slide_they_were_computed_from(
    make_napari_viewer, cmu_svs, tcga_svs, tiny_vit, open_slide, wait_for
):
    viewer = make_napari_viewer()
    cmu = open_slide(viewer, cmu_svs)
    tcga = open_slide(viewer, tcga_svs)  # no MPP: in pixels, not um
    widget = EmbedWidget(viewer)
    widget.model.set_model(tiny_vit)
    widget.tile_px.value, widget.mpp.value, widget.min_tissue.value, widget.k.value = (
        tiny_vit.spec.tile_px,
        2.0,
        0.1,
        2,
    )
    widget.slide.value = cmu
    widget.run()
    widget.slide.value = tcga  # the user picks another slide while the first one is embedded
    wait_for(widget)
    names = [layer.name for layer in viewer.layers]
    assert f"{cmu.name} clusters" in names and f"{tcga.name} clusters" not in names
    assert tuple(viewer.layers[f"{cmu.name} clusters"].units) == tuple(cmu.units)
    widget.show_similar(0)
    assert tuple(viewer.layers["similar tiles"].units) == tuple(cmu.units)


def test_maps_and_search_results_leave_with_their_slide_layer(
    make_napari_viewer, qtbot, cmu_svs, tcga_svs, tiny_vit, open_slide, wait_for
):
    """Removing a slide layer left its embedding map, clusters, the similar-tiles points and similarity heatmap
    on it in the viewer (over nothing, or over the next slide). They now go with it; the points follow the map
    last clicked (they moved to the other slide, so they stay), and the other slide's results stay."""
    viewer = make_napari_viewer()
    cmu, tcga = open_slide(viewer, cmu_svs), open_slide(viewer, tcga_svs)
    widget = EmbedWidget(viewer)
    widget.model.set_model(tiny_vit)
    widget.tile_px.value, widget.mpp.value, widget.min_tissue.value, widget.k.value = (
        tiny_vit.spec.tile_px, 2.0, 0.1, 2,
    )  # fmt: skip
    for slide in (cmu, tcga):
        widget.slide.value = slide
        widget.run()
        wait_for(widget)
        assert widget.result is not None, widget.status.value
        clusters = viewer.layers[f"{slide.name} clusters"]
        widget.search.target.value = clusters
        widget.search_tile(0, clusters)
        assert f"{slide.name} similarity" in viewer.layers
    names = {layer.name for layer in viewer.layers}
    for slide in (cmu, tcga):
        assert {f"{slide.name} {s}" for s in ("embedding map", "clusters")} <= names
    # one search at a time: TCGA's click dropped CMU's heatmap (tests/_qt/test_tile_search_bound.py)
    assert f"{tcga.name} similarity" in names and f"{cmu.name} similarity" not in names
    viewer.layers.remove(cmu)
    left = {
        tcga.name,
        "similar tiles",
        *(f"{tcga.name} {s}" for s in ("embedding map", "clusters", "similarity")),
    }

    def only(expected: set[str]) -> None:  # waitUntil reports the last difference when it times out
        assert {layer.name for layer in viewer.layers} == expected

    qtbot.waitUntil(lambda: only(left), timeout=30_000)
    viewer.layers.remove(tcga)
    qtbot.waitUntil(lambda: only(set()), timeout=30_000)


def test_a_slide_removed_while_it_is_embedded_gets_no_clusters(
    make_napari_viewer, cmu_svs, tiny_vit, open_slide, wait_for, monkeypatch
):
    """The slide removed mid-run: no clusters layer is added for it (the features stay in the cache), and the
    user is told why."""
    import napari.utils.notifications as notifications

    infos: list[str] = []
    monkeypatch.setattr(notifications, "show_info", infos.append)
    viewer = make_napari_viewer()
    cmu = open_slide(viewer, cmu_svs)
    widget = EmbedWidget(viewer)
    widget.model.set_model(tiny_vit)
    widget.tile_px.value, widget.mpp.value, widget.min_tissue.value = tiny_vit.spec.tile_px, 2.0, 0.1
    widget.slide.value = cmu
    widget.run()
    viewer.layers.remove(cmu)
    wait_for(widget)
    assert widget.result is None and f"{cmu.name} clusters" not in viewer.layers
    assert any(f"'{cmu.name}' was removed from the viewer while it ran" in m for m in infos), infos
    assert widget.status.value == f"Embedding: not shown ('{cmu.name}' was removed while it ran)"


def test_the_live_map_is_not_painted_back_after_its_slide_is_removed(
    make_napari_viewer, qtbot, cmu_svs, tiny_vit, open_slide, wait_for
):
    """Found driving the widget: the slide removed mid-run took its map layers with it, but the next tiles
    painted a new "<slide> embedding map" over nothing, which stayed; the slide opened again and embedded
    then got its final map into that orphan layer, under the slide, out of sight."""
    from napari_pathdistill.inference.live_map import PartialMap

    viewer = make_napari_viewer()
    cmu = open_slide(viewer, cmu_svs)
    widget = EmbedWidget(viewer)
    widget.model.set_model(tiny_vit)
    widget.tile_px.value, widget.mpp.value, widget.min_tissue.value = tiny_vit.spec.tile_px, 1.0, 0.1
    widget.batch_size.value, widget.k.value, widget.slide.value, widget.fit_rows = 4, 3, cmu, 8
    parts, on_item = [], widget._on_item

    def remove_at_the_first_paint(item, source):
        if isinstance(item, PartialMap):
            parts.append(item.done)
            if cmu in viewer.layers:
                viewer.layers.remove(cmu)  # mid-run, between two paints
        on_item(item, source)

    widget._on_item = remove_at_the_first_paint
    widget.run()
    wait_for(widget)
    qtbot.wait(50)  # the layers that go with the slide leave on the next event-loop turn
    assert len(parts) > 1, parts  # painted again after the removal
    assert [layer.name for layer in viewer.layers] == []

    widget._on_item = on_item
    again = open_slide(viewer, cmu_svs)
    widget.slide.value = again
    widget.run()
    wait_for(widget)
    names = [layer.name for layer in viewer.layers]
    assert names == [again.name, f"{again.name} embedding map", f"{again.name} clusters"], names


def test_slide_without_mpp_warns_and_its_um_px_override_lands_the_map_on_its_pixels(
    make_napari_viewer, qtbot, tcga_svs, tiny_vit, open_slide, wait_for, monkeypatch
):
    """The TCGA frozen section states no MPP, so our reader shows it in level-0 pixels. Embedding it without an
    override warns that its tiles are level-0 px; with 'slide um/px override' = 2 its tiles are cut at the
    requested 16 um/px (448 level-0 px) and the map, clusters and similar tiles sit on those tiles of the slide
    layer (in pixels), as hovering and clicking need."""
    import napari

    warned: list[str] = []
    monkeypatch.setattr(napari.utils.notifications, "show_warning", warned.append)
    viewer = make_napari_viewer()
    slide = open_slide(viewer, tcga_svs)
    assert tuple(slide.scale[-2:]) == (1.0, 1.0)
    widget = EmbedWidget(viewer)
    widget.model.set_model(tiny_vit)
    widget.slide.value = slide
    widget.tile_px.value, widget.mpp.value, widget.min_tissue.value = tiny_vit.spec.tile_px, 16.0, 0.5
    widget.run()
    widget.runner.cancel()
    wait_for(widget)
    assert len(warned) == 1 and "states no um/px" in warned[0] and "slide um/px override" in warned[0]
    widget.mpp_override.value = 2.0
    widget.run()
    wait_for(widget)
    assert len(warned) == 1  # the override silences it
    res = widget.result
    assert res is not None and res.grid.size_level0 == pytest.approx(448)
    labels = viewer.layers[f"{slide.name} clusters"]
    emap = viewer.layers[f"{slide.name} embedding map"]
    for layer in (labels, emap):
        np.testing.assert_allclose(layer.scale[-2:], (448, 448))
        np.testing.assert_allclose(layer.translate[-2:], res.translate)
    centres = res.grid.coords[:, ::-1] + (448 - 1) / 2  # level-0 px: the slide layer's world units
    np.testing.assert_allclose(res.tile_centers(), centres)
    for i in (0, len(centres) // 2, len(centres) - 1):  # the tile under its centre, as hover/click see it
        value = labels.get_value(tuple(centres[i]), world=True)
        assert labels.features["tile"][labels._label_index[value]] == i
    points = widget.show_similar(0)
    np.testing.assert_allclose(points.data[0], centres[0])


def test_live_map_progress_cancel_resume_and_cache_hit(
    make_napari_viewer, qtbot, cmu_svs, tiny_vit, open_slide, wait_for, tmp_path
):
    """The map fills in while the model runs, the dock's bar moves, Cancel keeps a partial cache file that the
    next Embed resumes (only the missing tiles run through the model), and a third Embed reads the cache."""
    from napari_pathdistill.inference.live_map import PartialMap

    viewer = make_napari_viewer()
    slide = open_slide(viewer, cmu_svs)
    widget = EmbedWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Embed slide")
    assert widget.cache_dir.value == tmp_path / "cache"
    widget.model.set_model(tiny_vit)
    widget.tile_px.value, widget.mpp.value, widget.min_tissue.value = tiny_vit.spec.tile_px, 1.0, 0.1
    widget.batch_size.value, widget.k.value, widget.slide.value = 8, 3, slide
    widget.fit_rows = 16
    real, calls = tiny_vit.embed, []
    tiny_vit.embed = lambda tiles: (calls.append(len(tiles)), real(tiles))[1]
    seen, on_item = [], widget._on_item
    name = f"{slide.name} embedding map"

    def spy(item, source, cancel_at=None):
        on_item(item, source)
        if isinstance(item, PartialMap):
            layer = viewer.layers[name]
            seen.append((item.done, item.total, widget.progress.value, int((layer.data[..., 3] > 0).sum())))
            if cancel_at and item.done >= cancel_at:
                widget.runner.cancel()

    widget._on_item = lambda item, source: spy(item, source, cancel_at=48)
    widget.run()
    wait_for(widget)
    assert "cancel" in widget.status.value and widget.result is None
    done, total = seen[-1][0], seen[-1][1]
    assert 48 <= done < total and seen[-1][2] == done  # the bar shows the tiles written
    assert [s[3] for s in seen] == [s[0] for s in seen]  # the live layer shows every tile done, as it goes
    (partial,) = (tmp_path / "cache").glob("*.h5.partial")
    assert name in viewer.layers  # what was painted stays until the next run
    _shoot(viewer, qtbot, "embed_widget_partial.png")

    painted = viewer.layers[name]
    seen.clear(), calls.clear()
    widget._on_item = lambda item, source: spy(item, source)
    widget.run()
    wait_for(widget)
    res = widget.result
    assert res is not None and len(res.features) == total, widget.status.value
    assert sum(calls) == total - done and seen[0][0] == done  # resumed: the kept tiles shown at once
    assert len(seen) > 2 and seen[0][0] < total  # updates before the end
    assert widget.progress.value == widget.progress.max == total
    layer = viewer.layers[name]
    assert layer is painted  # the resumed run paints into the cancelled run's layer (no removal, no gc pass)
    np.testing.assert_allclose(layer.data[..., :3], res.raster(res.rgb), atol=1e-6)  # final PCA, in place
    meta = viewer.layers[f"{slide.name} clusters"].metadata["pathdistill"]
    assert meta["slide_map"] is res and meta["slide_layer"] == slide.name and meta["model"] == res.model_name
    assert Path(meta["features_file"]).parent == tmp_path / "cache" and not partial.exists()
    viewer.layers[f"{slide.name} clusters"].visible = False
    _shoot(viewer, qtbot, "embed_widget_live.png")

    seen.clear(), calls.clear()
    start = time.perf_counter()
    widget.run()
    wait_for(widget)
    assert calls == [] and seen == [] and widget.result is not res  # the cache: no model, no live painting
    assert viewer.layers[name] is painted  # the cached map goes into the same layers
    np.testing.assert_allclose(painted.data[..., :3], res.raster(res.rgb), atol=1e-6)
    np.testing.assert_array_equal(widget.result.features, res.features)
    print(f"cached re-open: {time.perf_counter() - start:.2f} s for {total} tiles")


def test_the_press_makes_the_map_layers_and_the_run_fills_them_in_place(
    make_napari_viewer, qtbot, cmu_svs, tiny_vit, open_slide, wait_for
):
    """napari's layer creation (0.1-0.4 s each) happens when Embed is pressed, not while the user pans during the
    run: both layers exist, empty and placed, when ``run`` returns, and the run adds no layer."""
    viewer = make_napari_viewer(show=True)  # the canvas only renders when shown (Xvfb in CI)
    slide = open_slide(viewer, cmu_svs)
    widget = EmbedWidget(viewer)
    widget.model.set_model(tiny_vit)
    widget.tile_px.value, widget.mpp.value, widget.min_tissue.value, widget.k.value = (
        tiny_vit.spec.tile_px,
        1.0,
        0.1,
        3,
    )
    widget.batch_size.value, widget.fit_rows, widget.slide.value = 8, 16, slide
    widget.run()
    made = {name: viewer.layers[f"{slide.name} {name}"] for name in ("embedding map", "clusters")}
    assert not any(np.any(layer.data) for layer in made.values())  # empty at the press
    inserted = []
    viewer.layers.events.inserted.connect(lambda e: inserted.append(e.value.name))
    wait_for(widget)
    res = widget.result
    assert res is not None and inserted == [], (widget.status.value, inserted)
    assert all(viewer.layers[f"{slide.name} {name}"] is layer for name, layer in made.items())
    for layer in made.values():
        np.testing.assert_allclose(layer.scale, res.scale)
        np.testing.assert_allclose(layer.translate, res.translate)
        assert tuple(layer.units) == tuple(slide.units)
    np.testing.assert_array_equal(made["clusters"].data, res.cluster_label_image())
    np.testing.assert_allclose(made["embedding map"].data[..., :3], res.raster(res.rgb), atol=1e-6)
    assert made["clusters"].metadata["pathdistill"]["slide_map"] is res
    # what is drawn: the map's texture follows its raster, changed in place (``_repaint``)
    slide.visible = made["clusters"].visible = False
    viewer.reset_view()
    qtbot.wait(200)
    drawn = viewer.screenshot(canvas_only=True, flash=False)[..., :3].astype(int)
    made["embedding map"].visible = False
    qtbot.wait(200)
    background = viewer.screenshot(canvas_only=True, flash=False)[..., :3].astype(int)
    assert (np.abs(drawn - background).sum(-1) > 30).mean() > 0.05


def test_click_works_on_a_map_layer_the_widget_did_not_make(embedded, qtbot):
    """Any Labels layer carrying the map-layer metadata (e.g. from the feature-file reader) answers clicks."""
    viewer, slide, widget = embedded
    res = widget.result
    ours = viewer.layers[f"{slide.name} clusters"]
    other = viewer.add_labels(res.index_image, name="from a file", scale=res.scale, translate=res.translate,
                              metadata={"pathdistill": {"slide_map": res, "model": "x", "slide_layer": None,
                                                        "features_file": None}})  # fmt: skip
    ours.visible = False
    viewer.layers.selection.active = other
    from napari_pathdistill._qt.embed_widget import map_layer_at

    query = len(res.features) - 1
    hit = map_layer_at(viewer, res.tile_centers()[query])
    assert hit == (other, query)
    widget.show_similar(hit[1], hit[0])
    assert viewer.layers["similar tiles"].features["tile"].iloc[0] == query
    assert viewer.layers.selection.active is other


def _shoot(viewer, qtbot, name: str) -> None:
    """Save the window to docs/images/<name> when PATHDISTILL_SAVE_SCREENSHOTS is set."""
    if not os.environ.get("PATHDISTILL_SAVE_SCREENSHOTS"):
        return
    from skimage.io import imsave

    viewer.window._qt_window.resize(1400, 900)
    viewer.window.show()
    viewer.reset_view()
    qtbot.wait(300)
    imsave(DOCS_IMAGES / name, viewer.screenshot(canvas_only=False, flash=False))


def test_patch_token_map_option_runs_the_dense_map(
    make_napari_viewer, qtbot, cmu_svs, tiny_vit, open_slide, wait_for
):
    """map: "patch tokens (ViT)" runs inference.dense_maps and adds H4's "<slide> patch-token map" layer, aligned
    with the slide, instead of the tile map (no cache file, no clusters)."""
    from napari_pathdistill._qt.embed_widget import TOKENS

    viewer = make_napari_viewer()
    slide = open_slide(viewer, cmu_svs)
    widget = EmbedWidget(viewer)
    widget.model.set_model(tiny_vit)
    widget.tile_px.value, widget.mpp.value, widget.min_tissue.value = tiny_vit.spec.tile_px, 2.0, 0.1
    widget.slide.value, widget.map_kind.value = slide, TOKENS
    widget.run()
    wait_for(widget)
    assert widget.status.value.endswith("done"), widget.status.value
    layer = viewer.layers[f"{slide.name} patch-token map"]
    assert layer.rgb and tuple(layer.units) == tuple(slide.units) and layer.data[..., 3].any()
    assert f"{slide.name} clusters" not in viewer.layers and widget.progress.value == widget.progress.max
    meta = layer.metadata["pathdistill"]  # bound to its slide file, model and geometry
    assert meta["slide_path"] == str(cmu_svs.resolve()) and meta["slide_layer"] == slide.name
    assert (meta["model"], meta["tile_px"], meta["mpp"]) == (tiny_vit.spec.name, tiny_vit.spec.tile_px, 2.0)
    viewer.layers.remove(slide)  # the map goes with its slide
    qtbot.waitUntil(lambda: len(viewer.layers) == 0, timeout=30_000)


def test_closing_napari_mid_embed_keeps_a_resumable_cache(
    make_napari_viewer, qtbot, cmu_svs, tiny_vit, open_slide, wait_for, tmp_path
):
    import h5py

    def embed_widget():
        viewer = make_napari_viewer()
        widget = EmbedWidget(viewer)
        viewer.window.add_dock_widget(widget)
        widget.model.set_model(tiny_vit)
        widget.tile_px.value, widget.min_tissue.value, widget.batch_size.value = tiny_vit.spec.tile_px, 0.1, 8
        widget.slide.value, widget.cache_dir.value = open_slide(viewer, cmu_svs), tmp_path
        return viewer, widget

    viewer, widget = embed_widget()  # 28 um tiles: ~1,000 tiles of the 1.1 x 1.5 mm region, seconds on CPU
    widget.run()
    qtbot.waitUntil(lambda: widget.progress.value >= 16, timeout=60_000)  # two chunks of tiles written
    viewer.close()
    assert sorted(p.suffix for p in tmp_path.iterdir()) == [".partial"]  # closed and unlocked: no .lock left
    (partial,) = tmp_path.iterdir()
    with h5py.File(partial, "r") as f:
        done, total = int(f.attrs["done"]), len(f["coords"])
    assert 0 < done < total
    viewer, widget = embed_widget()
    widget.run()
    wait_for(widget)
    assert widget.result is not None and len(widget.result.features) == total
    assert widget.status.value == "Embedding: done"


def test_the_top_k_export_writes_the_similar_tiles_shown(embedded, tmp_path):
    """The export's "similar tiles (top k)" wrote the query and 10 tiles whatever the "similar tiles" field said
    (26 points shown for 25, 11 features written)."""
    import json

    viewer, slide, widget = embedded
    labels = viewer.layers[f"{slide.name} clusters"]
    widget.top_k.value = 3
    widget.search_tile(0, labels)
    shown = len(viewer.layers["similar tiles"].data)
    out = widget.search.export(tmp_path / "top.geojson", kind="similar tiles (top k)")
    assert out is not None and shown == 4
    assert len(json.loads(out.read_text())["features"]) == shown


def test_a_search_on_a_recomputed_map_is_dropped_not_exported(embedded, tmp_path, wait_for):
    """Found driving the widget: a tile clicked, then the slide embedded again at another um/px (its clusters
    layer updated in place with a map of 4x the tiles). The old heatmap and points stayed over the new map, and
    "Export GeoJSON" wrote the old map's cosines on the new map's first tiles, rows that are other tiles: wrong
    objects in QuPath, without a word. The search is now dropped with its heatmap and points, and said so."""
    viewer, slide, widget = embedded
    clusters = viewer.layers[f"{slide.name} clusters"]
    widget.search_tile(1, clusters)
    widget.search.threshold.value = 0.0
    assert widget.search.export(tmp_path / "before.geojson") is not None
    n_before = len(widget.result.features)
    widget.mpp.value = 1.0
    widget.run()
    wait_for(widget)
    assert viewer.layers[f"{slide.name} clusters"] is clusters and len(widget.result.features) > n_before
    names = [layer.name for layer in viewer.layers]
    assert f"{slide.name} similarity" not in names and "similar tiles" not in names, names
    assert widget.search.result is None and "click a tile again" in widget.search.summary.value
    assert (
        widget.search.export(tmp_path / "after.geojson") is None and not (tmp_path / "after.geojson").exists()
    )
    widget.search_tile(1, clusters)  # a new click searches the new map
    out = widget.search.export(tmp_path / "again.geojson")
    assert out is not None and len(json.loads(out.read_text())["features"]) == len(widget.result.features)
