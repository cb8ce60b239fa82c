"""Tile search panel in a real viewer: heatmap updated in place, threshold, cross-slide query, GeoJSON export."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from napari_pathdistill._qt.embed_widget import EmbedWidget
from napari_pathdistill._qt.tile_search import TileSearchPanel
from napari_pathdistill.inference.similarity_map import SimilarityMapError, heatmap
from napari_pathdistill.inference.slide_maps import iter_slide_map
from napari_pathdistill.progress import drain


@pytest.fixture(scope="module")
def os2_maps(os2_pair):
    """SlideMaps of the real OS-2 scanner pair (Hamamatsu vs Olympus, the same Ki67 region) by the bundled
    student (a random model's cosines all sit above 0.99, closer than the slider's 0.01 steps), 56 um tiles."""
    from napari_pathdistill.models import load_model

    model = load_model("pathdistill-student", device="cpu")
    return [drain(iter_slide_map(model, p, mpp=0.25, min_tissue=0.1, k=3)) for p in os2_pair]


@pytest.fixture
def two_slides(make_napari_viewer, os2_pair, os2_maps, open_slide):
    """The pair side by side in um, their maps shown by the Embed widget (map layers with the contract metadata)."""
    viewer = make_napari_viewer()
    ndpi, vsi = open_slide(viewer, os2_pair[0]), open_slide(viewer, os2_pair[1])
    shift = np.array([0.0, 550.0])  # um: B beside A
    vsi.translate = shift
    widget = EmbedWidget(viewer)
    # the fields the maps were computed with (os2_maps), so that the screenshot's dock shows them
    widget.mpp.value, widget.min_tissue.value, widget.k.value = 0.25, 0.1, 3
    viewer.window.add_dock_widget(widget, name="Embed slide")
    for smap, layer in zip(os2_maps, (ndpi, vsi), strict=True):
        widget.show_result(smap, source=(layer.name, layer.units))
    a, b = (viewer.layers[f"{layer.name} clusters"] for layer in (ndpi, vsi))
    for layer in (b, viewer.layers[f"{vsi.name} embedding map"]):  # on B, wherever B was moved
        np.testing.assert_allclose(layer.translate, np.asarray(os2_maps[1].translate) + shift)
    return viewer, widget, a, b


def test_click_heatmap_in_place_threshold_and_export(two_slides, tmp_path):
    viewer, widget, a, _b = two_slides
    panel = widget.search
    smap = a.metadata["pathdistill"]["slide_map"]
    widget.search_tile(3, a)
    heat = viewer.layers[f"{a.metadata['pathdistill']['slide_layer']} similarity"]
    assert heat.colorbar.visible and tuple(heat.scale) == tuple(smap.scale)
    rr, cc = np.nonzero(smap.index_image == 4)  # tile 3's cell
    assert heat.data[rr[0], cc[0]] == pytest.approx(1.0, abs=1e-5)
    first = heat.data.copy()
    widget.search_tile(7, a)
    assert viewer.layers[heat.name] is heat and not np.array_equal(heat.data, first)  # updated in place
    assert "similar tiles" in viewer.layers  # beside today's top-k points
    panel.threshold.value = 0.0
    shown = _alpha(heat)
    cos = panel.result[3].cosine
    thr = round(float(np.median(cos)), 2)  # about half the tiles pass
    panel.threshold.value = thr
    assert heat.contrast_limits == [thr, 1.0] and f"cosine >= {thr:.3f}" in panel.summary.value
    alpha = _alpha(heat)
    hidden = np.isfinite(heat.data) & (heat.data < thr)  # tiles below the threshold: drawn, transparent now
    assert hidden.any() and np.all(alpha[hidden] == 0) and np.all(shown[hidden] > 0)
    assert np.all(alpha[heat.data >= thr + 1e-3] > 0) and np.all(alpha[smap.index_image == 0] == 0)
    n_similar = int((cos >= thr).sum()) - 1  # the query tile is its own class
    assert n_similar >= 1
    with open(panel.export(tmp_path / "thr.geojson")) as f:  # default: thresholded similarity
        doc = json.load(f)
    assert doc["type"] == "FeatureCollection"
    assert _classes(doc) == ["query"] + ["similar"] * n_similar
    assert all(f["properties"]["measurements"]["cosine"] >= thr for f in doc["features"])
    top = _load(panel.export(tmp_path / "top.geojson", kind="similar tiles (top k)"))
    assert _classes(top) == ["query"] + ["similar"] * panel.top_k
    clusters = _load(panel.export(tmp_path / "clusters.geojson", kind="clusters"))
    assert _classes(clusters) == [f"cluster {c}" for c in smap.clusters]
    for d in (doc, top, clusters):
        for f in d["features"]:
            c = f["properties"]["classification"]["color"]
            assert len(c) == 3 and all(0 <= v <= 255 for v in c) and f["geometry"]["type"] == "Polygon"
    x, y = smap.grid.coords[7]
    assert doc["features"][0]["geometry"]["coordinates"][0][0] == [x, y]  # the query tile, in level-0 px


def test_first_click_keeps_the_map_layer_selected_throughout(two_slides):
    """The click adds the 'similar tiles' and heatmap layers without making them active on the way (napari
    activates an inserted layer, which shows its fresh controls panel, 0.1-1 s each on a busy CPU, only for the
    widget to re-select the map): the clicked map stays the one selected layer at every selection change."""
    viewer, widget, a, _b = two_slides
    viewer.layers.selection.active = a
    seen = []

    def record(_event):
        seen.append((viewer.layers.selection.active, set(viewer.layers.selection)))

    viewer.layers.selection.events.changed.connect(record)
    widget.search_tile(3, a)
    viewer.layers.selection.events.changed.disconnect(record)
    assert (
        "similar tiles" in viewer.layers
        and f"{a.metadata['pathdistill']['slide_layer']} similarity" in viewer.layers
    )
    assert all(active is a and selected == {a} for active, selected in seen)
    assert viewer.layers.selection.active is a
    assert viewer.layers._activate_on_insert  # napari's default is back after the click


def _alpha(layer):
    """Per-cell opacity the layer's colormap gives its data (what the canvas shows)."""
    lo, hi = layer.contrast_limits
    norm = np.clip((layer.data - lo) / (hi - lo), 0, 1)
    return layer.colormap.map(norm.ravel())[:, 3].reshape(layer.data.shape)


def _load(path):
    with open(path) as f:
        return json.load(f)


def _classes(doc):
    return [f["properties"]["classification"]["name"] for f in doc["features"]]


def test_cross_slide_query_lands_on_the_other_slide(two_slides, tmp_path, save_screenshot, qtbot):
    viewer, widget, a, b = two_slides
    panel = widget.search
    panel.target.value = b
    widget.search_tile(0, a)
    name = f"{b.metadata['pathdistill']['slide_layer']} similarity"
    heat = viewer.layers[name]
    assert heat.data.shape == b.data.shape
    np.testing.assert_allclose(heat.translate, b.translate)
    np.testing.assert_allclose(heat.scale, b.scale)
    smap_b = b.metadata["pathdistill"]["slide_map"]
    rr, cc = np.nonzero(smap_b.index_image)
    hm = heatmap(a.metadata["pathdistill"]["slide_map"], 0, smap_b)
    np.testing.assert_allclose(heat.data[rr, cc], hm.cosine[smap_b.index_image[rr, cc] - 1])
    assert f"{a.name.removesuffix(' clusters')} similarity" not in viewer.layers  # only B's heatmap
    assert f"in {b.metadata['pathdistill']['slide_layer']} with cosine" in panel.summary.value
    panel.threshold.value = round(float(np.median(hm.cosine)), 3)  # half of B's tiles shown
    b.visible = viewer.layers[f"{b.metadata['pathdistill']['slide_layer']} embedding map"].visible = False
    viewer.window.show()
    # the whole dock, Export GeoJSON included, in the docs' picture
    viewer.window._qt_window.resize(1700, 880)
    viewer.reset_view()
    qtbot.wait(300)  # the dock's scroll area settles (its scroll bar is gone once the form has its width)
    save_screenshot(viewer, "tile_search.png")
    cross = _load(panel.export(tmp_path / "b.geojson", kind="similar tiles (top k)"))
    assert _classes(cross) == ["similar"] * panel.top_k  # the query tile lies on slide A: not a tile of B
    best = smap_b.grid.coords[np.argmax(hm.cosine)]
    assert cross["features"][0]["geometry"]["coordinates"][0][0] == list(map(float, best))


def test_standalone_panel_and_maps_of_another_model(two_slides):
    viewer, _widget, a, b = two_slides
    panel = TileSearchPanel(viewer)  # alone, outside the Embed widget
    choices = panel.target.choices  # "the clicked slide", then every map layer
    assert choices[0] is None and sorted(c.name for c in choices[1:]) == sorted([a.name, b.name])
    heat = panel.query(a, 2)
    assert heat is viewer.layers[f"{a.metadata['pathdistill']['slide_layer']} similarity"]
    meta = b.metadata["pathdistill"]
    meta["slide_map"] = dataclasses.replace(meta["slide_map"], model_name="another model")
    panel.target.value = b
    with pytest.raises(SimilarityMapError, match="different models"):
        panel.query(a, 2)


def test_before_a_click_the_summary_shows_the_threshold_and_what_to_do(make_napari_viewer) -> None:
    """The slider has no readout (the summary line shows its value), but that line stayed empty until a tile was
    clicked: a threshold set first was set blind, and the empty panel said nothing of how to use it."""
    panel = EmbedWidget(make_napari_viewer()).search
    assert panel.result is None
    assert panel.summary.value.startswith("similarity >= 0.800: click a tile")
    panel.threshold.value = 0.5
    assert panel.summary.value.startswith("similarity >= 0.500: click a tile")
