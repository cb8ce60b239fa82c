"""Similarity widget on the real cross-scanner OS-2 pair (Hamamatsu NDPI vs Olympus VSI, Ki67)."""

from __future__ import annotations

import csv
import threading

import numpy as np
import pytest

from napari_pathdistill._qt.similarity_widget import SimilarityWidget
from napari_pathdistill.metrics.pairs import pair_metrics
from napari_pathdistill.progress import Progress

pytestmark = pytest.mark.napari


def _os2_widget(make_napari_viewer, os2_pair, tiny_vit, open_slide, *, mpp: float):
    """A viewer with the real OS-2 scanner pair and the widget set on it (A, B, the tiny ViT, ``mpp`` um/px)."""
    viewer = make_napari_viewer()
    a, b = (open_slide(viewer, p) for p in os2_pair)
    widget = SimilarityWidget(viewer)
    widget.model.set_model(tiny_vit)
    widget.slide_a.value, widget.slide_b.value = a, b
    widget.mpp.value = mpp
    return viewer, a, b, widget


def _compare_os2(
    make_napari_viewer,
    os2_pair,
    tiny_vit,
    open_slide,
    wait_for,
    *,
    mpp: float,
    top_k: int = 5,
    swap: bool = False,
):
    """Run the widget on the real OS-2 scanner pair at ``mpp`` um/px with default tissue settings and top-k;
    ``swap``: choose B as slide A (and A as B) right after the run starts."""
    viewer, a, b, widget = _os2_widget(make_napari_viewer, os2_pair, tiny_vit, open_slide, mpp=mpp)
    widget.tile_px.value = tiny_vit.spec.tile_px
    assert widget.min_tissue.value == 0.5  # the default
    widget.top_k.value = top_k
    widget.run()
    if swap:
        widget.slide_a.value, widget.slide_b.value = b, a
    wait_for(widget)
    return viewer, a, b, widget


def test_os2_pair_registers_and_compares(make_napari_viewer, qtbot, os2_pair, tiny_vit, open_slide, wait_for):
    """Default tissue settings on the pale Ki67 pair; cosine overlay with a colour bar; registered B in A's frame
    (blend, checkerboard, hidden) agreeing with A; top-k flagged when its candidate pool is too small."""
    from napari_pathdistill.wsi.registration import checkerboard, density

    viewer, a, b, widget = _compare_os2(make_napari_viewer, os2_pair, tiny_vit, open_slide, wait_for, mpp=1.0)
    res = widget.result
    assert res is not None, widget.status.value
    assert len(res.cosine) > 0.5 * 64  # 56 um tiles on the 500 um field: most are tissue
    # both scans are the same 500 um field: the registered B tile sits at the same physical place (+- 10 um)
    mpp_a, mpp_b = a.scale[-1], b.scale[-1]
    np.testing.assert_allclose(res.coords_b * mpp_b, res.coords_a * mpp_a, atol=10.0)
    overlay = viewer.layers[f"{a.name} cosine to B"]
    assert overlay.colorbar.visible and overlay.colormap.name == "viridis"
    # a tile is size_level0 level-0 px: on A's layer that is size_level0 times the layer's own (y, x) um/px
    np.testing.assert_allclose(overlay.scale[-2:], np.asarray(res.scale) / res.mpp_a * a.scale[-2:])
    assert np.isfinite(res.overlay).sum() == len(res.cosine)
    assert f"{res.mean_cosine:.3f}" in widget.summary.value
    assert pair_metrics(np.eye(3), np.eye(3), ks=(1,), device="cpu").topk[1] == 1.0
    assert 0.0 <= res.topk_accuracy <= 1.0
    n = len(res.cosine)
    assert (res.topk_note is None) == (5 / (2 * n - 1) <= 0.1)
    # registered B: on A's pixels in world um, agreeing with A (NCC of optical density)
    reg = viewer.layers[f"{a.name} registered B"]
    view = res.registered
    assert reg.rgb and reg.visible and reg.opacity == 0.5 and reg.data is view.b_in_a
    corner = np.asarray(reg.data_to_world((0, 0)))[-2:]
    np.testing.assert_allclose(corner, np.asarray(view.translate), atol=1e-3)  # A's layer is in um, from 0
    np.testing.assert_allclose(np.asarray(reg.extent.world)[:, -2:], np.asarray(a.extent.world)[:, -2:],
                               atol=2 * view.scale[0])  # fmt: skip
    da, db = density(view.a), density(np.asarray(reg.data))
    ok = view.inside
    x, y = da[ok] - da[ok].mean(), db[ok] - db[ok].mean()
    assert x @ y / (np.linalg.norm(x) * np.linalg.norm(y)) > 0.85
    layers = list(viewer.layers)
    assert layers.index(reg) < layers.index(overlay)  # the cosine stays on top
    widget.view_mode.value = "checkerboard"
    reg = viewer.layers[f"{a.name} registered B"]
    np.testing.assert_array_equal(reg.data, checkerboard(view.a, view.b_in_a))
    side = int(np.ceil(max(view.a.shape[:2]) / 8))
    np.testing.assert_array_equal(reg.data[:side, :side], view.a[:side, :side])  # a square of A ...
    np.testing.assert_array_equal(
        reg.data[:side, side : 2 * side], view.b_in_a[:side, side : 2 * side]
    )  # of B
    assert reg.opacity == 1.0 and reg.visible
    widget.view_mode.value = "hidden"
    assert not viewer.layers[f"{a.name} registered B"].visible
    widget.view_mode.value = "blend"
    assert viewer.layers[f"{a.name} registered B"].data is view.b_in_a


def test_tiny_candidate_pool_flags_topk(make_napari_viewer, os2_pair, tiny_vit, open_slide, wait_for):
    """224 um tiles (4 on the field): top-5 over 7 candidates scores ~1 by chance, and the dock says so."""
    *_, widget = _compare_os2(make_napari_viewer, os2_pair, tiny_vit, open_slide, wait_for, mpp=4.0)
    res = widget.result
    assert res is not None and len(res.cosine) == 4, widget.status.value
    assert res.topk_note is not None and "7 candidates" in res.topk_note
    assert "NOT MEANINGFUL" in widget.summary.value and "0.71" in widget.summary.value


def test_lowered_top_k_is_said_and_results_stay_on_the_run_s_slide_a(
    make_napari_viewer, os2_pair, tiny_vit, open_slide, wait_for
):
    """top-10 over 4 matched tiles (7 neighbours each) is top-7, and the summary says so; swapping the slides in
    the choosers while it runs leaves the overlays on the run's slide A (before: named after and placed on B)."""
    viewer, a, b, widget = _compare_os2(make_napari_viewer, os2_pair, tiny_vit, open_slide, wait_for, mpp=4.0,
                                        top_k=10, swap=True)  # fmt: skip
    res = widget.result
    assert res is not None and res.k == 7, widget.status.value
    assert "top-10 lowered to top-7 (the 8 pooled tiles have 7 neighbours each)" in widget.summary.value
    cosine, registered = viewer.layers[f"{a.name} cosine to B"], viewer.layers[f"{a.name} registered B"]
    assert f"{b.name} cosine to B" not in viewer.layers
    for layer in (cosine, registered):  # inside A's extent (B's is larger: 0.346 vs 0.227 um/px)
        lo, hi = np.asarray(layer.extent.world)
        a_lo, a_hi = np.asarray(a.extent.world)
        assert (lo >= a_lo - 5).all() and (hi <= a_hi + 5).all(), (layer.name, lo, hi, a_lo, a_hi)


def test_overlays_land_on_slide_a_moved_while_the_run_works(
    make_napari_viewer, os2_pair, tiny_vit, open_slide, wait_for
):
    """Slide A moved 600 um to the right while the pair was registered: the cosine overlay and registered B were
    placed where A sat when the run started (beside it, over nothing); they now lie on A where it is."""
    viewer, a, _, widget = _os2_widget(make_napari_viewer, os2_pair, tiny_vit, open_slide, mpp=4.0)
    widget.run()

    def move_a(item) -> None:  # on the main thread, while the worker goes on
        if isinstance(item, Progress) and item.stage == "registration" and a.translate[-1] == 0:
            a.translate = (0.0, 600.0)

    widget.runner.worker.yielded.connect(move_a)
    wait_for(widget)
    assert widget.result is not None and a.translate[-1] == 600.0, widget.status.value
    a_lo, a_hi = np.asarray(a.extent.world)
    for name in (f"{a.name} cosine to B", f"{a.name} registered B"):
        lo, hi = np.asarray(viewer.layers[name].extent.world)
        assert (lo >= a_lo - 5).all() and (hi <= a_hi + 5).all(), (name, lo, hi, a_lo, a_hi)


def test_slide_b_defaults_to_another_slide(make_napari_viewer, os2_pair, open_slide):
    viewer = make_napari_viewer()
    widget = SimilarityWidget(viewer)
    a = open_slide(viewer, os2_pair[0])
    assert widget.slide_a.value is a and widget.slide_b.value is a  # one slide: nothing else to offer
    b = open_slide(viewer, os2_pair[1])
    assert widget.slide_a.value is a and widget.slide_b.value is b
    assert SimilarityWidget(viewer).slide_b.value is b  # docked after both were opened


def test_tile_fields_follow_an_injected_model(make_napari_viewer, tiny_vit):
    """A ready model's spec sets tile px / um/px (56 px for the tiny ViT); back to the chooser, the student's."""
    from napari_pathdistill.models.testing import tiny_model

    widget = SimilarityWidget(make_napari_viewer())
    assert (widget.tile_px.value, widget.mpp.value) == (224, 0.5)
    widget.model.set_model(tiny_vit)
    assert (widget.tile_px.value, widget.mpp.value) == (tiny_vit.spec.tile_px, tiny_vit.spec.mpp) == (56, 0.5)
    widget.model.set_model(tiny_model("vit", tile_px=112))
    assert widget.tile_px.value == 112
    widget.model.set_model(None)
    assert (widget.tile_px.value, widget.mpp.value) == (224, 0.5)


def test_um_per_px_keeps_four_decimals(make_napari_viewer):
    """The tile um/px field had Qt's 2 decimals, which round the value itself: a 0.2527 um/px model's tiles (a
    scanner's MPP) were cut at 0.25, and 0.125 became 0.13. Four, as Embed's um/px and the override fields."""
    widget = SimilarityWidget(make_napari_viewer())
    widget.mpp.value = 0.2527
    assert widget.mpp.value == pytest.approx(0.2527)
    widget.mpp.value = 0.125
    assert widget.mpp.value == pytest.approx(0.125)


def test_same_layer_and_half_landmarks_are_refused(make_napari_viewer, os2_pair, errors, open_slide):
    viewer = make_napari_viewer()
    a = open_slide(viewer, os2_pair[0])
    widget = SimilarityWidget(viewer)
    widget.slide_a.value = widget.slide_b.value = a
    widget.run()
    assert "same layer" in errors[-1]
    b = open_slide(viewer, os2_pair[1])
    widget.slide_b.value = b
    widget.landmarks_a.value = viewer.add_points(np.array([[10.0, 10.0], [50, 10], [10, 60]]), name="lm A")
    widget.run()
    assert "both slides" in errors[-1]
    widget.landmarks_b.value = viewer.add_points(np.array([[10.0, 10.0], [50, 10]]), name="lm B")
    widget.run()
    assert "'lm A' has 3 points and 'lm B' has 2" in errors[-1]


def _birl_landmarks(path):
    with open(path, newline="") as fh:
        return {row[""]: (float(row["X"]), float(row["Y"])) for row in csv.DictReader(fh)}


def test_birl_he_vs_ihc_plain_jpgs_with_um_px_override_and_landmarks(
    make_napari_viewer, shared_data, tiny_vit, errors, wait_for
):
    """BIRL H&E vs proSPC IHC: 5 % JPEGs opened by napari's own reader (in px, no um/px); automatic registration
    lands the H&E landmarks on the IHC ones, the landmark override too, and the overlay sits on the H&E layer."""
    viewer = make_napari_viewer()
    d = shared_data / "paired" / "birl_anhir" / "lesions_"
    for name in ("Izd2-29-041-w35_HE.jpg", "Izd2-29-041-w35_proSPC.jpg"):
        viewer.open(str(d / name), plugin="napari")
    he, ihc = viewer.layers
    widget = SimilarityWidget(viewer)
    assert list(widget.slide_a.choices) == [he, ihc]
    widget.slide_a.value, widget.slide_b.value = he, ihc
    widget.model.set_model(tiny_vit)
    widget.tile_px.value = tiny_vit.spec.tile_px
    widget.mpp.value = 1.0
    widget.min_tissue.value = 0.3
    widget.run()
    wait_for(widget)
    assert widget.result is None and "um/px override" in errors[-1]
    widget.mpp_override.value = 1.0  # a stand-in scale: both images share it, which is all registration needs
    lf, lm = _birl_landmarks(d / "Izd2-29-041-w35_HE.csv"), _birl_landmarks(d / "Izd2-29-041-w35_proSPC.csv")
    keys = sorted(set(lf) & set(lm), key=int)
    fp, mp = np.array([lf[k] for k in keys]), np.array([lm[k] for k in keys])
    tre = {}
    for mode in ("auto", "landmarks"):
        if mode == "landmarks":  # manual override: Points layers in the layers' (y, x) world frame
            widget.landmarks_a.value = viewer.add_points(fp[:, ::-1], name="HE landmarks")
            widget.landmarks_b.value = viewer.add_points(mp[:, ::-1], name="IHC landmarks")
        widget.run()
        wait_for(widget)
        res = widget.result
        assert res is not None and len(res.cosine) >= 2, widget.status.value
        assert res.transform.registration.method.startswith(mode)
        assert res.b_resampled, "the sections are turned by 10 degrees: B's tiles follow"
        assert "B's tiles resampled through the registration" in widget.summary.value
        tre[mode] = np.linalg.norm(res.transform.apply(fp) - mp, axis=1).mean()
    identity = np.linalg.norm(fp - mp, axis=1).mean()
    assert identity > 50 and tre["auto"] < 12.0 and tre["landmarks"] < 12.0, (identity, tre)
    overlay = viewer.layers[f"{he.name} cosine to B"]
    size = res.coords_a[1:] - res.coords_a[:-1]
    tile = np.abs(size[size != 0]).min()  # tile side in level-0 px = the H&E layer's world units
    np.testing.assert_allclose(overlay.scale[-2:], (tile, tile))
    first = res.coords_a[0] + (tile - 1) / 2  # centre of the first matched tile, (x, y) level-0 px
    r, c = np.round(overlay.world_to_data(first[::-1])).astype(int)
    assert res.overlay[r, c] == pytest.approx(res.cosine[0])


def test_a_rerun_clears_the_summary_follows_a_moved_a_and_warns_of_unrelated_slides(
    make_napari_viewer, qtbot, os2_pair, tiny_vit, open_slide, wait_for, monkeypatch
):
    """A cancelled run left the last pair's numbers on screen; registered B stayed where A was before it was
    moved; an unrelated pair (another tissue) finished as 'done' without a word."""
    import napari.utils.notifications as notifications

    warnings_shown: list[str] = []
    monkeypatch.setattr(notifications, "show_warning", warnings_shown.append)
    viewer, a, b, widget = _compare_os2(make_napari_viewer, os2_pair, tiny_vit, open_slide, wait_for, mpp=4.0)
    assert widget.summary.value and not widget.summary.value.startswith("WARNING") and not warnings_shown
    a.translate = (100.0, 0.0)
    widget.run()
    assert widget.summary.value == ""  # until this run's result
    wait_for(widget)
    registered = viewer.layers[f"{a.name} registered B"]
    cosine = viewer.layers[f"{a.name} cosine to B"]
    assert registered.translate[-2] == pytest.approx(a.translate[-2] + registered.scale[-2] / 2 - a.scale[-2] / 2,
                                                     abs=1.0)  # fmt: skip
    assert cosine.translate[-2] > 90
    other = open_slide(viewer, os2_pair[0].parent / "OS-1-detail.ome.tif")
    widget.slide_a.value, widget.slide_b.value = other, b
    widget.min_tissue.value, widget.mpp.value = 0.0, 1.0
    widget.run()
    wait_for(widget)
    assert widget.summary.value.startswith("WARNING: the auto-affine registration looks wrong"), (
        widget.status.value
    )
    assert warnings_shown and "Are A and B the same tissue?" in warnings_shown[-1]


def test_overlays_leave_with_slide_a(make_napari_viewer, qtbot, os2_pair, tiny_vit, open_slide, wait_for):
    """Removing slide A left '<A> cosine to B' and '<A> registered B' over nothing; they now go with it, and
    removing B (only compared with) keeps them."""
    viewer, a, b, widget = _compare_os2(make_napari_viewer, os2_pair, tiny_vit, open_slide, wait_for, mpp=4.0)
    assert widget.result is not None, widget.status.value
    overlays = [f"{a.name} cosine to B", f"{a.name} registered B"]
    viewer.layers.remove(b)
    qtbot.wait(50)
    assert all(name in viewer.layers for name in overlays)
    viewer.layers.remove(a)
    qtbot.waitUntil(lambda: len(viewer.layers) == 0, timeout=30_000)


def test_cancel_during_the_registered_view_adds_nothing(
    make_napari_viewer, qtbot, os2_pair, tiny_vit, open_slide, wait_for, monkeypatch
):
    """Cancel pressed once the tiles were embedded, while B was resampled into A's frame: that step read both
    thumbnails again and ignored Cancel to its end. The core is paused at the step's first item (the real run,
    passed through) until Cancel is clicked; the run then ends at the next strip, with no layer added."""
    from napari_pathdistill._qt import similarity_widget

    in_view, clicked, after = threading.Event(), threading.Event(), []
    real = similarity_widget.iter_pair_similarity

    def paused_in_the_view(*args, cancel, **kw):
        for item in real(*args, cancel=cancel, **kw):
            if cancel.is_set():
                after.append(item)
            elif isinstance(item, Progress) and item.stage == "registered view" and not in_view.is_set():
                in_view.set()
                clicked.wait(60)
            yield item

    monkeypatch.setattr(similarity_widget, "iter_pair_similarity", paused_in_the_view)
    viewer, a, b, widget = _os2_widget(make_napari_viewer, os2_pair, tiny_vit, open_slide, mpp=4.0)
    widget.run()
    qtbot.waitUntil(in_view.is_set, timeout=120_000)
    widget.cancel_button.native.click()
    clicked.set()
    wait_for(widget)
    assert widget.status.value == "Similarity cancelled" and widget.result is None
    assert [layer.name for layer in viewer.layers] == [a.name, b.name]
    assert len(after) <= 1, after  # the item it was paused at, at most


def test_removing_slide_a_stops_the_run(make_napari_viewer, qtbot, os2_pair, tiny_vit, open_slide, wait_for):
    """Removing slide A while the pair was registered let the run register, tile and embed both slides to its end,
    then show nothing (its overlays lie on A): the removal now cancels it. B alone removed does not (A's
    overlays still show)."""
    viewer, a, b, widget = _os2_widget(make_napari_viewer, os2_pair, tiny_vit, open_slide, mpp=4.0)
    widget.run()
    stages: list[str] = []

    def remove_a_in_the_registration(item) -> None:  # on the main thread, while the worker goes on
        if isinstance(item, Progress):
            stages.append(item.stage)
            if stages.count("registration") == 1:
                viewer.layers.remove(a)

    widget.runner.worker.yielded.connect(remove_a_in_the_registration)
    wait_for(widget)
    assert widget.status.value == f"Similarity stopped: '{a.name}' was removed while it ran"
    assert "embedding A" not in stages and widget.result is None, stages
    assert [layer.name for layer in viewer.layers] == [b.name]
    a = open_slide(viewer, os2_pair[0])
    widget.slide_a.value, widget.slide_b.value = a, b
    widget.run()
    viewer.layers.remove(b)
    wait_for(widget)
    assert widget.result is not None and f"{a.name} cosine to B" in viewer.layers, widget.status.value
