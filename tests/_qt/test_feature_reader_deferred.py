"""A large CLAM / TRIDENT feature file dropped on napari: its map is computed off the main thread, in a worker
that fills the reader's layers in place with exactly what the synchronous reader gives (``_qt.deferred_map``)."""

from __future__ import annotations

import threading
from pathlib import Path

import h5py
import numpy as np
import pytest

from _shared_data import SHARED_DATA
from napari_pathdistill._feature_reader import read_features
from napari_pathdistill._qt import deferred_map

SLIDE = (SHARED_DATA / "wsi" / "CMU-1-Small-Region.svs").resolve()


def _trident_file(path: Path, tile: int, dim: int = 32) -> Path:
    """``trident/IO.save_h5`` of CMU-1-Small-Region cut in ``tile`` px tiles (16 px: 25,530 rows), one HDF5 chunk
    per row; each tile's features a random projection of its mean colour plus noise (the map shows tissue)."""
    import openslide

    with openslide.OpenSlide(str(SLIDE)) as s:
        w, h = s.dimensions
        img = np.asarray(s.read_region((0, 0), 0, (w, h)).convert("RGB"), np.float32) / 255
    ny, nx = h // tile, w // tile
    colour = img[: ny * tile, : nx * tile].reshape(ny, tile, nx, tile, 3).mean((1, 3)).reshape(-1, 3)
    rng = np.random.default_rng(0)
    feats = colour @ rng.standard_normal((3, dim)).astype(np.float32) * 4
    feats += rng.standard_normal(feats.shape, dtype=np.float32) * 0.3
    xs, ys = np.meshgrid(np.arange(nx) * tile, np.arange(ny) * tile)
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        f.create_dataset("features", data=feats, maxshape=(None, dim), chunks=(1, dim))
        c = f.create_dataset("coords", data=np.c_[xs.ravel(), ys.ravel()].astype(np.int64), chunks=(1, 2))
        c.attrs.update({"patch_size": tile, "patch_size_level0": tile, "level0_magnification": 20,
                        "target_magnification": 20, "overlap": 0, "name": SLIDE.stem,
                        "level0_width": w, "level0_height": h})  # fmt: skip
    return path


@pytest.fixture(scope="module")
def big(tmp_path_factory) -> Path:
    return _trident_file(tmp_path_factory.mktemp("trident") / f"{SLIDE.stem}.h5", 16)


def _same_as_synchronous(layers, path: Path) -> None:
    """The filled layers hold what the synchronous reader creates its layers with."""
    import napari

    expected = read_features(str(path))  # defer=False: complete layer data
    assert [ly.name for ly in layers] == [kw["name"] for _, kw, _ in expected]
    for layer, (data, kw, kind) in zip(layers, expected, strict=True):
        made = getattr(napari.layers, kind.capitalize())(data, **kw)  # the synchronous path's layer
        np.testing.assert_array_equal(layer.data, data)
        for attr in ("scale", "translate", "units", "opacity"):
            assert tuple(np.atleast_1d(getattr(layer, attr))) == tuple(np.atleast_1d(getattr(made, attr))), (
                attr
            )
        if kind == "image":
            assert layer.rgb and tuple(layer.contrast_limits) == tuple(made.contrast_limits)
            assert layer.metadata == made.metadata == {}
        else:
            assert layer.features.equals(made.features)
            np.testing.assert_array_equal(layer.colormap.colors, made.colormap.colors)
            meta, want = layer.metadata["pathdistill"], made.metadata["pathdistill"]
            assert meta.keys() == want.keys() and "pending" not in meta
            np.testing.assert_array_equal(meta["slide_map"].clusters, want["slide_map"].clusters)
            assert meta["slide_layer"] == want["slide_layer"] == SLIDE.name


def test_a_large_trident_file_is_mapped_in_a_worker_while_the_viewer_stays_live(
    make_napari_viewer, big, qtbot
):
    """25,530 rows without a stored map: ``viewer.open`` returns the two layers before their map exists (the
    PCA and k-means of a 100k-row file held napari's main thread for 3-15 s), the event loop keeps running while
    the worker computes, and the layers are then filled in place with the synchronous reader's result; the Embed
    widget, docked before the drop, finds the map for its click and lists it in "search in"."""
    from qtpy.QtCore import QTimer

    from napari_pathdistill._qt.embed_widget import EmbedWidget, map_layer_at

    viewer = make_napari_viewer()
    [slide] = viewer.open(str(SLIDE), plugin="napari-pathdistill")
    widget = EmbedWidget(viewer)
    viewer.window.add_dock_widget(widget)
    ticks = []
    timer = QTimer()
    timer.timeout.connect(lambda: ticks.append(1))
    timer.start(5)
    layers = viewer.open(str(big), plugin="napari-pathdistill")
    at_return = len(ticks)
    labels = layers[1]
    assert [ly.name for ly in layers] == [f"{slide.name} embedding map", f"{slide.name} clusters"]
    assert "slide_map" not in labels.metadata["pathdistill"]  # returned before the map was computed
    assert not labels.data.any() and layers[0].data[..., 3].any()  # grey tiles, no clusters yet
    grey_extent = np.asarray(labels.extent.world)
    qtbot.waitUntil(lambda: "slide_map" in labels.metadata["pathdistill"], timeout=120_000)
    timer.stop()
    assert len(ticks) > at_return + 1  # the event loop ran while the map was computed
    assert not deferred_map._MAPS
    np.testing.assert_allclose(np.asarray(labels.extent.world), grey_extent)  # placed where it will stay
    _same_as_synchronous(layers, big)
    assert labels in [layer for _, layer in widget.search._choices()]  # "search in" lists the filled map
    smap = labels.metadata["pathdistill"]["slide_map"]
    i = len(smap.clusters) - 1
    with h5py.File(big, "r") as f:
        corner = f["coords"][i]
    hit = map_layer_at(viewer, (corner[::-1] + 8) * slide.scale[-1])  # the far tile's centre in um
    assert hit == (labels, i)
    widget.show_similar(i, labels)
    assert viewer.layers["similar tiles"].features["tile"].iloc[0] == i


def test_removing_the_layers_before_the_map_is_ready_is_harmless(make_napari_viewer, big, qtbot):
    """Both layers removed while the worker runs: it is cancelled and nothing comes back; only the map layer
    removed (here before the worker starts): the clusters layer is still filled."""
    viewer = make_napari_viewer()
    viewer.open(str(SLIDE), plugin="napari-pathdistill")
    first = viewer.open(str(big), plugin="napari-pathdistill")
    [job] = deferred_map._MAPS.values()
    qtbot.waitUntil(lambda: job.worker is not None, timeout=60_000)
    unfilled = "slide_map" not in first[1].metadata["pathdistill"]
    for layer in first:
        viewer.layers.remove(layer)
    second = viewer.open(str(big), plugin="napari-pathdistill")
    viewer.layers.remove(second[0])
    assert deferred_map.wait_for_maps(120)
    assert not deferred_map._MAPS and job.ended.is_set()
    assert job.cancel.is_set() == unfilled  # still running when removed: cancelled, its result dropped
    assert [ly.name for ly in viewer.layers] == [SLIDE.name, second[1].name]
    assert "slide_map" in second[1].metadata["pathdistill"] and second[1].data.any()
    assert all("pending" not in ly.metadata.get("pathdistill", {}) for ly in viewer.layers)


def _rows(path: Path) -> int:
    with h5py.File(path, "r") as f:
        return len(f["coords"])


def test_small_files_and_direct_calls_come_complete(make_napari_viewer, tmp_path):
    """Below ``DEFER_MIN_ROWS`` rows the npe2 reader stays synchronous, and ``read_features`` called directly
    (scripts, benchmarks) always gives complete layers, also with a viewer open."""
    small = _trident_file(tmp_path / "small" / f"{SLIDE.stem}.h5", 64)
    large = _trident_file(tmp_path / "large" / f"{SLIDE.stem}.h5", 24)
    assert _rows(small) < deferred_map.DEFER_MIN_ROWS <= _rows(large)
    viewer = make_napari_viewer()
    viewer.open(str(SLIDE), plugin="napari-pathdistill")
    labels = viewer.open(str(small), plugin="napari-pathdistill")[1]
    assert "slide_map" in labels.metadata["pathdistill"]  # at once
    _data, kw, _kind = read_features(str(large))[1]
    assert "slide_map" in kw["metadata"]["pathdistill"] and not deferred_map._MAPS


def test_a_file_whose_rows_fail_in_the_worker_leaves_no_grey_map(make_napari_viewer, big, tmp_path, qtbot):
    """Every row NaN (a float16 overflow in the model that wrote them): the coords place the layers, the worker's
    read then fails; its error is notified and the grey placeholders, which would pass for a map, are removed."""
    from napari.utils.notifications import notification_manager

    nan = tmp_path / f"{SLIDE.stem}.h5"
    nan.write_bytes(big.read_bytes())
    with h5py.File(nan, "a") as f:
        f["features"][...] = np.nan
    viewer = make_napari_viewer()
    viewer.open(str(SLIDE), plugin="napari-pathdistill")
    seen = len(notification_manager.records)
    layers = viewer.open(str(nan), plugin="napari-pathdistill")
    assert len(layers) == 2
    assert deferred_map.wait_for_maps(120)
    assert [ly.name for ly in viewer.layers] == [SLIDE.name]
    said = [str(n.message) for n in notification_manager.records[seen:]]
    assert any("every one of its 25530 feature rows holds NaN or inf" in m for m in said), said


def test_rows_left_out_in_the_worker_are_said_and_the_map_matches(make_napari_viewer, big, tmp_path, qtbot):
    """Two NaN rows: the worker's NonFiniteFeatureWarning reaches napari's notifications (as the synchronous
    reader's does) and the filled layers still equal the synchronous reader's, without those two tiles."""
    from napari.utils.notifications import notification_manager

    path = tmp_path / f"{SLIDE.stem}.h5"
    path.write_bytes(big.read_bytes())
    with h5py.File(path, "a") as f:
        for row in (5, 9000):
            f["features"][row] = np.inf
    viewer = make_napari_viewer()
    viewer.open(str(SLIDE), plugin="napari-pathdistill")
    seen = len(notification_manager.records)
    layers = viewer.open(str(path), plugin="napari-pathdistill")
    assert deferred_map.wait_for_maps(120)
    said = [str(n.message) for n in notification_manager.records[seen:]]
    assert any("2 of 25530 tiles have NaN or inf features" in m for m in said), said
    assert len(layers[1].metadata["pathdistill"]["slide_map"].clusters) == 25528
    _same_as_synchronous(layers, path)


def test_a_viewer_that_is_not_the_current_one_gets_its_map(make_napari_viewer, big, qtbot):
    """A script's ``first.open(file)`` after a second viewer was made (the current one): the layers land in the
    first viewer, which the worker fills (watching only the current viewer left them grey for ever)."""
    import napari

    first = make_napari_viewer()
    second = make_napari_viewer()
    assert napari.current_viewer() is second
    labels = first.open(str(big), plugin="napari-pathdistill")[1]
    assert deferred_map.wait_for_maps(120)
    assert "slide_map" in labels.metadata["pathdistill"] and labels.data.any() and not len(second.layers)


def test_pathdistill_view_waits_for_a_pending_map_before_its_screenshot(make_napari_viewer, big):
    """``pathdistill view FILE.h5 --screenshot`` must show the map, not the grey placeholders: the CLI (which does
    not import the Qt layer) runs the event loop while a layer's metadata says its map is pending."""
    from napari_pathdistill.cli.view import _wait_for_pending_maps

    viewer = make_napari_viewer()
    layers = viewer.open(str(big), plugin="napari-pathdistill")
    assert "pending" in layers[1].metadata["pathdistill"]
    _wait_for_pending_maps(viewer, timeout=120)
    assert "slide_map" in layers[1].metadata["pathdistill"] and layers[1].data.any()
    assert all("pending" not in ly.metadata.get("pathdistill", {}) for ly in viewer.layers)


class _SetAfter(threading.Event):
    """An event that reads as set from its ``n``-th ``is_set()`` on (cancelled while the worker runs)."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.n, self.calls = n, 0

    def is_set(self) -> bool:
        self.calls += 1
        return self.calls >= self.n or super().is_set()


def test_a_cancelled_map_stops_within_its_read_instead_of_after_it(big, monkeypatch):
    """Closing the window (or removing the layers) while a 100k-row file's map is computed waited for the whole
    read, PCA and k-means (8-13 s on a busy CPU): the worker now stops inside the step it is in."""
    from napari_pathdistill.inference import feature_files

    finished = []
    real = feature_files.read_feature_file
    monkeypatch.setattr(
        feature_files, "read_feature_file", lambda p: finished.append(real(p)) or finished[-1]
    )
    cancel = _SetAfter(3)  # the check before the read passes; a check inside it sees the cancellation
    items = list(deferred_map._compute(big, None, "x", {}, {}, cancel))
    assert items == [deferred_map.STEPS[0]]  # no further step, no result, no error
    assert finished == []  # the read itself stopped
    assert cancel.calls == 3
