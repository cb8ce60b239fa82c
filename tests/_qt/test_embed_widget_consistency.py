"""Embed widget on real slides: its layers follow a moved slide layer, its "search in" list, hover table, Cancel on a
small slide, a bad cache folder, one colour scale for points and heatmap, one cluster palette, its fields."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from napari_pathdistill._qt.embed_widget import EmbedWidget, map_layer_at

pytestmark = pytest.mark.napari
SHIFT = np.array([0.0, 550.0])  # um: slide B moved beside slide A


@pytest.fixture(autouse=True)
def _cache_in_tmp(monkeypatch, tmp_path):
    """Feature files go to the test's folder, not the user cache (the widget's default comes from the env)."""
    monkeypatch.setenv("PATHDISTILL_CACHE_DIR", str(tmp_path / "cache"))


def _widget(viewer, model, mpp: float, k: int = 3) -> EmbedWidget:
    widget = EmbedWidget(viewer)
    widget.model.set_model(model)
    widget.tile_px.value, widget.mpp.value, widget.min_tissue.value, widget.k.value = (
        model.spec.tile_px,
        mpp,
        0.1,
        k,
    )
    return widget


def _embed(widget, slide, wait_for) -> None:
    widget.slide.value = slide
    widget.run()
    wait_for(widget)
    assert widget.result is not None, widget.status.value


def _shot(viewer, qtbot, path: Path) -> None:
    """The whole window into ``path`` (the test's folder), checked to be drawn."""
    import imageio.v3 as iio

    viewer.window._qt_window.resize(1500, 900)
    viewer.window.show()
    qtbot.wait(300)
    shot = viewer.screenshot(canvas_only=False, flash=False)
    assert shot[..., :3].std() > 10
    iio.imwrite(path, shot)


@pytest.fixture
def os2_moved(make_napari_viewer, os2_pair, tiny_vit, open_slide, wait_for):
    """Both OS-2 scans, B moved 550 um right of A (as a user lays them side by side), embedded A then B."""
    viewer = make_napari_viewer()
    a, b = (open_slide(viewer, p) for p in os2_pair)
    b.translate = SHIFT
    widget = _widget(viewer, tiny_vit, mpp=1.0)  # 56 um tiles, as 224 px at 0.25 um/px
    _embed(widget, a, wait_for)
    _embed(widget, b, wait_for)
    return viewer, widget, a, b


def test_map_layers_points_and_heatmap_follow_a_moved_slide_layer(os2_moved, qtbot, tmp_path):
    """B's map and clusters sat at the core's translate, on A, and clicks on A hit B's map: they follow B now."""
    viewer, widget, a, b = os2_moved
    for slide, offset in ((a, np.zeros(2)), (b, SHIFT)):
        clusters = viewer.layers[f"{slide.name} clusters"]
        smap = clusters.metadata["pathdistill"]["slide_map"]
        for layer in (clusters, viewer.layers[f"{slide.name} embedding map"]):
            np.testing.assert_allclose(layer.scale[-2:], smap.scale)
            np.testing.assert_allclose(layer.translate[-2:], np.asarray(smap.translate) + offset)
        centres = smap.tile_centers() + offset  # on the slide layer, wherever it sits
        for i in (0, len(centres) - 1):
            assert map_layer_at(viewer, centres[i]) == (clusters, i)  # A's tiles answer on A, B's on B
    clusters_b = viewer.layers[f"{b.name} clusters"]
    smap_b = clusters_b.metadata["pathdistill"]["slide_map"]
    query = len(smap_b.features) // 2
    widget.search_tile(query, clusters_b)
    points = viewer.layers["similar tiles"]
    np.testing.assert_allclose(points.data[0], smap_b.tile_centers()[query] + SHIFT)
    tiles = points.features["tile"].to_numpy().astype(int)
    np.testing.assert_allclose(points.data, smap_b.tile_centers()[tiles] + SHIFT)
    heat = viewer.layers[f"{b.name} similarity"]
    np.testing.assert_allclose(heat.translate, clusters_b.translate)
    np.testing.assert_allclose(heat.data_to_world((0, 0)), clusters_b.data_to_world((0, 0)))
    viewer.layers[f"{b.name} clusters"].visible = viewer.layers[f"{a.name} clusters"].visible = False
    viewer.reset_view()
    _shot(viewer, qtbot, tmp_path / "moved_slide_b.png")


def test_search_in_lists_a_map_as_soon_as_its_run_ends(os2_moved):
    """Maps are made empty at the press and get their slide_map in place at the end: "search in" lists B's map
    without waiting for a layer to be inserted or removed."""
    viewer, widget, a, b = os2_moved
    listed = [layer for layer in widget.search.target.choices if layer is not None]
    assert {layer.name for layer in listed} == {f"{a.name} clusters", f"{b.name} clusters"}
    widget.search.target.value = viewer.layers[f"{b.name} clusters"]  # choosable
    assert widget.search.target.value is viewer.layers[f"{b.name} clusters"]


def test_hover_shows_tile_positions_as_integers(make_napari_viewer, tcga_svs, tiny_vit, open_slide, wait_for):
    """TCGA (no MPP, level-0 px): hovering a tile showed "x: 3.14e+03"; the table holds its exact position."""
    viewer = make_napari_viewer()
    slide = open_slide(viewer, tcga_svs)
    widget = _widget(viewer, tiny_vit, mpp=16.0)
    widget.mpp_override.value, widget.min_tissue.value = 2.0, 0.5  # 448 level-0 px tiles
    _embed(widget, slide, wait_for)
    res, labels = widget.result, viewer.layers[f"{slide.name} clusters"]
    centres = res.tile_centers()
    for i in range(len(centres)):
        text = labels.get_status(tuple(centres[i]), world=True)["coordinates"]
        x, y = res.grid.coords[i]
        assert f"tile: {i}, x: {x}, y: {y}, cluster: {res.clusters[i]}," in text, text
        assert not re.search(r"\b(tile|x|y|cluster): [^,]*e\+", text), text
    assert res.grid.coords[:, 0].max() >= 1000  # positions napari's float format would have rounded


def test_cancel_on_a_small_slide_keeps_every_tile_it_painted(
    make_napari_viewer, qtbot, cmu_svs, tiny_vit, open_slide, wait_for, tmp_path
):
    """CMU-1-Small-Region at 56 um tiles: 221 tiles, fewer than the live PCA's FIT_ROWS (256). Its live map waited
    for all of them, so Cancel at ~96 left nothing and removed both layers; now the tiles embedded stay painted."""
    from napari_pathdistill.inference.live_map import FIT_ROWS, PartialMap

    viewer = make_napari_viewer()
    slide = open_slide(viewer, cmu_svs)
    widget = _widget(viewer, tiny_vit, mpp=1.0)
    widget.min_tissue.value, widget.batch_size.value, widget.slide.value = 0.5, 8, slide
    assert widget.fit_rows == FIT_ROWS
    viewer.window.add_dock_widget(widget, name="Embed slide")
    on_item, parts = widget._on_item, []

    def spy(item, source):
        on_item(item, source)
        parts.extend([item] if isinstance(item, PartialMap) else [])
        if getattr(item, "done", 0) >= 96 and getattr(item, "total", 0):
            widget.runner.cancel()

    widget._on_item = spy
    widget.run()
    wait_for(widget)
    assert "cancel" in widget.status.value and widget.result is None
    total, done = parts[-1].total, parts[-1].done
    assert total == 221 and 96 <= done < total and parts[0].done < 96  # painted before the cancel too
    painted = viewer.layers[f"{slide.name} embedding map"]
    assert int((painted.data[..., 3] > 0).sum()) == done  # every tile embedded is on screen
    assert f"{slide.name} clusters" not in viewer.layers  # the empty one goes
    assert widget.progress.value == done
    viewer.reset_view()
    _shot(viewer, qtbot, tmp_path / "cancelled_small_slide.png")


def test_bad_cache_folder_is_refused_up_front_and_a_failed_run_leaves_the_widget_as_it_was(
    make_napari_viewer, cmu_svs, tiny_vit, open_slide, wait_for, errors, tmp_path
):
    viewer = make_napari_viewer()
    slide = open_slide(viewer, cmu_svs)
    widget = _widget(viewer, tiny_vit, mpp=2.0)
    _embed(widget, slide, wait_for)
    n = len(widget.result.features)
    state = (
        widget.progress.max,
        widget.progress.value,
        widget.legend.value,
        [la.name for la in viewer.layers],
    )
    assert state[:2] == (n, n)
    (tmp_path / "afile").write_text("x")
    for bad in (tmp_path / "afile" / "sub", Path("/proc/pathdistill_cache")):
        widget.cache_dir.value = bad
        widget.run()
        assert not widget.runner.running  # refused at the press: no worker, no layers, no 2 s wait
        assert errors[-1] == widget.status.value
        assert (
            errors[-1].startswith(f"cache folder {bad} cannot be created") and "choose another" in errors[-1]
        )
        assert "Error" not in errors[-1]  # no raw NotADirectoryError / FileNotFoundError
        assert (widget.progress.max, widget.progress.value, widget.legend.value,
                [la.name for la in viewer.layers]) == state  # fmt: skip
    widget.cache_dir.value = tmp_path / "cache"
    widget.min_tissue.value = 1.0
    widget.mpp.value = 1800 * 0.499 / tiny_vit.spec.tile_px  # one 1800 px tile, not 100 % tissue: fails
    widget.run()
    wait_for(widget)
    assert "min tissue" in errors[-1]
    # the bar shows the result still on screen, beside its legend and layers (not 0 % beside them)
    assert (widget.progress.max, widget.progress.value, widget.legend.value,
            [la.name for la in viewer.layers]) == state  # fmt: skip


@pytest.fixture
def student_on_cmu(make_napari_viewer, cmu_svs, open_slide, wait_for):
    """CMU-1-Small-Region embedded by the bundled student (a random model's cosines all sit above 0.99)."""
    from napari_pathdistill.models import load_model

    viewer = make_napari_viewer()
    slide = open_slide(viewer, cmu_svs)
    widget = _widget(viewer, load_model("pathdistill-student", device="cpu"), mpp=1.0, k=4)
    widget.top_k.value = 12
    _embed(widget, slide, wait_for)
    return viewer, widget, slide


def test_similar_tiles_points_share_the_heatmaps_colour_scale(student_on_cmu, qtbot, tmp_path):
    """The points were coloured over their own cosine range and the heatmap over [threshold, 1]: one colour was
    two cosines. Both map a cosine through the same magma on the heatmap's contrast limits now."""
    viewer, widget, slide = student_on_cmu
    labels = viewer.layers[f"{slide.name} clusters"]
    widget.search_tile(0, labels)
    points, heat = viewer.layers["similar tiles"], viewer.layers[f"{slide.name} similarity"]
    cos = points.features["cosine"].to_numpy()
    widget.search.threshold.value = round(float(np.quantile(cos, 0.2)), 3)  # most points above it, some below
    lo, hi = heat.contrast_limits
    assert tuple(points.face_contrast_limits) == (lo, hi)  # not the points' own cosine range
    assert widget.search.contrast_limits == (lo, hi)
    expected = heat.colormap.map(np.clip((cos - lo) / (hi - lo), 0, 1))
    above = (
        cos >= lo + 2e-3
    )  # the heatmap's bottom colour is transparent: below it a point keeps magma's first
    assert above.sum() >= 3 and (~above).any()
    np.testing.assert_allclose(points.face_color[above, :3], expected[above, :3], atol=0.02)
    assert np.all(points.face_color[:, 3] == 1)  # points below the threshold stay drawn
    for tile, colour in zip(
        points.features["tile"], points.face_color, strict=True
    ):  # as the heatmap draws it
        r, c = np.argwhere(widget.result.index_image == int(tile) + 1)[0]
        if heat.data[r, c] >= lo + 2e-3:
            np.testing.assert_allclose(colour[:3], heat.colormap.map([(heat.data[r, c] - lo) / (hi - lo)])[0, :3],
                                       atol=0.02)  # fmt: skip
    labels.visible = viewer.layers[f"{slide.name} embedding map"].visible = False
    viewer.reset_view()
    _shot(viewer, qtbot, tmp_path / "similar_points_and_heatmap.png")


def test_clusters_layer_legend_and_geojson_share_one_palette(student_on_cmu, tmp_path):
    """QuPath GeoJSON took tab20 while the clusters layer and legend took napari's label colours."""
    import json

    viewer, widget, slide = student_on_cmu
    res, labels = widget.result, viewer.layers[f"{slide.name} clusters"]
    widget.search_tile(0, labels)
    out = widget.search.export(tmp_path / "clusters.geojson", kind="clusters")
    exported = {f["properties"]["classification"]["name"]: f["properties"]["classification"]["color"]
                for f in json.loads(out.read_text())["features"]}  # fmt: skip
    k = res.n_clusters
    legend = dict(re.findall(r"color:#([0-9a-f]{6})'>&#9632;</span> cluster (\d+)", widget.legend.value))
    legend = {int(c): h for h, c in legend.items()}
    assert len(exported) >= 2 and len(legend) == len(exported)
    for i in range(len(res.clusters)):
        c = int(res.clusters[i])
        drawn = np.round(labels.get_color(i * k + c)[:3] * 255).astype(int)
        np.testing.assert_allclose(drawn, exported[f"cluster {c}"], atol=1)
        assert legend[c] == "".join(f"{v:02x}" for v in exported[f"cluster {c}"])


def test_um_px_shows_four_decimals(make_napari_viewer):
    """0.125 um/px was shown (and used) as 0.13; the field keeps 4 decimals like 'slide um/px override'."""
    widget = EmbedWidget(make_napari_viewer())
    for value in (0.125, 0.2527):
        widget.mpp.value = value
        assert widget.mpp.value == value
    assert widget.mpp.native.decimals() == widget.mpp_override.native.decimals() == 4
    assert widget.mpp.native.text() == "0.2527"


def test_stride_names_the_chosen_models_patch_size(make_napari_viewer, tiny_vit):
    """The bundled student has 16 px patches (14 x 14 tokens of 8 um per 224 px tile at 0.5 um/px), not 14."""
    widget = EmbedWidget(make_napari_viewer())
    spec = widget.model.spec()
    assert spec.name == "pathdistill-student" and spec.patch_size == 16
    assert "16 px for pathdistill-student" in widget.stride.tooltip and widget.stride.step == 16
    widget.model.set_model(tiny_vit)  # a DINOv2-style patch-14 ViT
    assert "14 px for tiny-vit" in widget.stride.tooltip and widget.stride.step == 14
    widget.model.set_model(None)
    widget.model.choice.value = "efficientnet-lite2-imagenet"
    assert "no ViT" in widget.stride.tooltip
    docs = (Path(__file__).resolve().parents[2] / "docs" / "widgets.md").read_text()
    grid, cell = spec.tile_px // 16, 16 * spec.mpp
    section = " ".join(docs[docs.index("## Dense patch-token maps") :].split())  # lines joined
    assert (
        f"gives {grid} x {grid} patch tokens" in section and f"({cell:g} um at {spec.mpp:g} um/px)" in section
    )


def test_the_token_stride_reads_tile_px_and_is_only_offered_for_the_token_map(make_napari_viewer) -> None:
    """The stride field showed "0" (a stride of 0 px) for "one tile apart, no overlap", and took edits while the
    tile map, which has no stride, was chosen."""
    from napari_pathdistill._qt.embed_widget import TILES, TOKENS

    widget = EmbedWidget(make_napari_viewer())
    assert widget.stride.native.text() == "tile px" and not widget.stride.enabled
    widget.map_kind.value = TOKENS
    assert widget.stride.enabled
    widget.stride.value = 112
    assert widget.stride.native.text() == "112"
    widget.map_kind.value = TILES
    assert not widget.stride.enabled
