"""The tile search shows one search at a time: a heatmap of an earlier click (on another slide, or before a
refused query) is not left beside the new click's points (found driving two slides and a no-MPP one with the
Embed widget: three heatmaps of two clicks, three colour bars), a search whose slide was removed is dropped, and the threshold reaches negative cosines."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from napari_pathdistill._qt.embed_widget import EmbedWidget
from napari_pathdistill.inference.slide_maps import iter_slide_map
from napari_pathdistill.progress import drain


@pytest.fixture(scope="module")
def tiny_os2_maps(os2_pair):
    """SlideMaps of the real OS-2 scanner pair by a tiny random H0-mini (56 um tiles, ~80 per slide)."""
    from napari_pathdistill.models.testing import tiny_model

    model = tiny_model("h0-mini", tile_px=56)
    return [drain(iter_slide_map(model, p, mpp=1.0, min_tissue=0.1, k=3)) for p in os2_pair]


@pytest.fixture
def pair(make_napari_viewer, os2_pair, tiny_os2_maps, open_slide):
    """Viewer, Embed widget, (slide, map layer) of A and B, B beside A."""
    viewer = make_napari_viewer()
    slides = [open_slide(viewer, p) for p in os2_pair]
    slides[1].translate = (0.0, 550.0)
    widget = EmbedWidget(viewer)
    for smap, layer in zip(tiny_os2_maps, slides, strict=True):
        widget.show_result(smap, source=(layer.name, layer.units))
    maps = [viewer.layers[f"{layer.name} clusters"] for layer in slides]
    return viewer, widget, slides, maps


def _heatmaps(viewer):
    return [layer.name for layer in viewer.layers if layer.name.endswith(" similarity")]


def test_a_search_in_another_slide_drops_the_previous_heatmap(pair):
    viewer, widget, (sa, sb), (a, b) = pair
    widget.search_tile(3, a)
    assert _heatmaps(viewer) == [f"{sa.name} similarity"]
    widget.search.target.value = b
    widget.search_tile(5, a)  # the star moves to tile 5: tile 3's heatmap on A must not stay beside it
    assert _heatmaps(viewer) == [f"{sb.name} similarity"]
    heat = viewer.layers[f"{sb.name} similarity"]
    smap_a, smap_b = (layer.metadata["pathdistill"]["slide_map"] for layer in (a, b))
    q = smap_a.features[5].astype(np.float64)
    fb = smap_b.features.astype(np.float64)
    want = fb @ q / (np.linalg.norm(fb, axis=1) * np.linalg.norm(q))
    rr, cc = np.nonzero(smap_b.index_image)
    np.testing.assert_allclose(heat.data[rr, cc], want[smap_b.index_image[rr, cc] - 1], atol=1e-5)


def test_a_refused_query_drops_the_previous_search(pair, errors, tmp_path):
    viewer, widget, _slides, (a, b) = pair
    widget.search_tile(3, a)
    meta = b.metadata["pathdistill"]
    meta["slide_map"] = dataclasses.replace(meta["slide_map"], weights="0" * 16)  # another checkpoint
    widget.search.target.value = b
    widget.search_tile(5, a)
    assert len(errors) == 1 and "different weights" in errors[0]
    assert _heatmaps(viewer) == []  # not tile 3's heatmap under tile 5's star
    assert widget.search.result is None
    assert "tile 5" in widget.search.summary.value and "different weights" in widget.search.summary.value
    assert widget.search.export(tmp_path / "x.geojson") is None  # nothing of tile 3's search is written
    assert not (tmp_path / "x.geojson").exists()


@pytest.mark.parametrize("removed", ["searched", "clicked"])
def test_removing_a_slide_of_the_search_drops_it(pair, tmp_path, qtbot, removed):
    viewer, widget, (sa, sb), (a, b) = pair
    widget.search.target.value = b
    widget.search_tile(2, a)
    assert _heatmaps(viewer) == [f"{sb.name} similarity"]
    slide, its_map = (sb, b) if removed == "searched" else (sa, a)
    viewer.layers.remove(slide)  # its map leaves with it (next event loop turn), and so does the search
    qtbot.waitUntil(lambda: its_map not in viewer.layers, timeout=5000)
    assert widget.search.result is None and f"{slide.name} was removed" in widget.search.summary.value
    qtbot.waitUntil(lambda: _heatmaps(viewer) == [], timeout=5000)  # B's heatmap of A's tile, either way
    widget.search.threshold.value = 0.5  # no count of the removed slide's tiles
    assert f"{slide.name} was removed" in widget.search.summary.value
    assert widget.search.export(tmp_path / "b.geojson") is None and not (tmp_path / "b.geojson").exists()
    # tile 2's top-k points lie on A: they stay while A does (they are A's own), else they leave with it
    if removed == "searched":
        assert "similar tiles" in viewer.layers
    else:
        qtbot.waitUntil(lambda: "similar tiles" not in viewer.layers, timeout=5000)


def test_threshold_reaches_negative_cosines(make_napari_viewer, shared_data, open_slide):
    """A tiny random H0-mini on CMU-1-Small-Region (glass and tissue tiles): cosines down to about -0.8, so a
    threshold of 0 hid part of the slide and no setting showed its whole heatmap."""
    from napari_pathdistill.models.testing import tiny_model

    viewer = make_napari_viewer()
    slide = open_slide(viewer, shared_data / "wsi" / "CMU-1-Small-Region.svs")
    smap = drain(iter_slide_map(tiny_model("h0-mini", tile_px=56), slide.metadata["pathdistill"]["path"],
                                mpp=2.0, min_tissue=0.3, k=3))  # fmt: skip
    widget = EmbedWidget(viewer)
    widget.show_result(smap, source=(slide.name, slide.units))
    widget.search_tile(len(smap.features) // 2, viewer.layers[f"{slide.name} clusters"])
    cos = widget.search.result[3].cosine
    assert (cos < 0).any()  # some tiles point away from the clicked one
    widget.search.threshold.value = -1.0  # the whole slide's heatmap: every tile drawn
    heat = viewer.layers[f"{slide.name} similarity"]
    assert heat.contrast_limits == [-1.0, 1.0]
    lo, hi = heat.contrast_limits
    alpha = heat.colormap.map(np.clip((heat.data - lo) / (hi - lo), 0, 1).ravel())[:, 3]
    tiles = np.isfinite(heat.data).ravel()
    assert np.all(alpha[tiles] > 0) and np.all(alpha[~tiles] == 0)
    assert f"{len(cos)} tiles with cosine >= -1.000" in widget.search.summary.value


class _Counter:
    def __init__(self):
        self.calls = 0

    def __call__(self):
        self.calls += 1


def test_a_recomputed_map_forgets_the_search_once(pair):
    """Dropping the search removes its heatmap, whose removal event refreshes the panel: that refresh finds no
    search left to drop, so the top-k points' owner is told once."""
    viewer, widget, (sa, _sb), (a, _b) = pair
    widget.search_tile(4, a)
    counter = _Counter()
    widget.search.on_forget(counter.__call__)
    meta = a.metadata["pathdistill"]
    meta["slide_map"] = dataclasses.replace(meta["slide_map"])  # Embed run again: another map on the layer
    widget.search.refresh()
    assert counter.calls == 1 and widget.search.result is None
    assert "tile 4's search was recomputed" in widget.search.summary.value
    assert f"{sa.name} similarity" not in viewer.layers and "similar tiles" not in viewer.layers
