"""Tile search panel in a real viewer: heatmap updated in place, threshold, cross-slide query, GeoJSON export."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from napari_pathdistill._qt.embed_widget import EmbedWidget
from napari_pathdistill.inference.slide_maps import iter_slide_map
from napari_pathdistill.progress import drain

DOCS = Path(__file__).parents[2] / "docs" / "images"


def _show(widget, slide_layer, path, model):
    smap = drain(iter_slide_map(model, path, mpp=1.0, min_tissue=0.1, k=3))
    widget.show_result(smap, source=(slide_layer.name, slide_layer.units))
    return widget.viewer.layers[f"{slide_layer.name} clusters"]


@pytest.fixture
def two_slides(make_napari_viewer, os2_pair, tiny_vit, open_slide):
    """The real OS-2 scanner pair (Hamamatsu vs Olympus, the same Ki67 region), side by side in um."""
    viewer = make_napari_viewer()
    ndpi, vsi = open_slide(viewer, os2_pair[0]), open_slide(viewer, os2_pair[1])
    shift = np.array([0.0, 550.0])  # um: B beside A
    vsi.translate = shift
    widget = EmbedWidget(viewer)
    viewer.window.add_dock_widget(widget)
    a = _show(widget, ndpi, os2_pair[0], tiny_vit)
    b = _show(widget, vsi, os2_pair[1], tiny_vit)
    for layer in (b, viewer.layers[f"{vsi.name} embedding map"]):
        layer.translate = np.asarray(layer.translate) + shift
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
    panel.threshold.value = 0.95
    assert heat.contrast_limits == [0.95, 1.0] and "cosine >= 0.95" in panel.summary.value
    out = panel.export(tmp_path / "search.geojson")
    doc = json.loads(out.read_text())
    names = [f["properties"]["classification"]["name"] for f in doc["features"]]
    n_similar = int((panel.result[3].cosine >= 0.95).sum())
    assert doc["type"] == "FeatureCollection" and names.count("similar") == n_similar >= 1
    assert sum(n.startswith("cluster ") for n in names) == len(smap.features)
    assert all(len(f["properties"]["classification"]["color"]) == 3 for f in doc["features"])


def test_cross_slide_query_lands_on_the_other_slide(two_slides):
    viewer, widget, a, b = two_slides
    panel = widget.search
    panel.target.value = b
    widget.search_tile(0, a)
    name = f"{b.metadata['pathdistill']['slide_layer']} similarity"
    heat = viewer.layers[name]
    assert heat.data.shape == b.data.shape
    np.testing.assert_allclose(heat.translate, b.translate) and np.testing.assert_allclose(heat.scale, b.scale)
    assert "in " in panel.summary.value
    viewer.window.show()
    viewer.reset_view()
    DOCS.mkdir(parents=True, exist_ok=True)
    import imageio.v3 as iio

    iio.imwrite(DOCS / "tile_search.png", viewer.screenshot(canvas_only=False, flash=False))
