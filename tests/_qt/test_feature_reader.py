"""The feature-file reader in a real viewer: map layers aligned in um with the slide from our reader."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest

from _shared_data import SHARED_DATA
from napari_pathdistill._feature_reader import get_feature_reader
from napari_pathdistill.inference.embed import embed_slide
from napari_pathdistill.models.testing import tiny_model

SLIDE = (SHARED_DATA / "wsi" / "CMU-1-Small-Region.svs").resolve()


@pytest.fixture(scope="module")
def ours(tmp_path_factory) -> Path:
    import dataclasses

    model = tiny_model("vit")
    model.spec = dataclasses.replace(model.spec, mpp=2.0)
    return embed_slide(SLIDE, model, tmp_path_factory.mktemp("feats"), num_workers=0)


def test_drop_on_open_slide_aligned_in_um(make_napari_viewer, ours, save_screenshot):
    viewer = make_napari_viewer()
    [slide] = viewer.open(str(SLIDE), plugin="napari-pathdistill")
    assert get_feature_reader(str(ours)) is not None and get_feature_reader(str(SLIDE)) is None
    layers = viewer.open(str(ours), plugin="napari-pathdistill")  # the stored slide is open: not added twice
    assert [ly.name for ly in layers] == [f"{slide.name} embedding map", f"{slide.name} clusters"]
    labels = layers[1]
    meta = labels.metadata["pathdistill"]
    smap = meta["slide_map"]
    assert meta["features_file"] == str(ours) and meta["model"] == smap.model_name
    assert tuple(str(u) for u in labels.units) == ("micrometer", "micrometer")
    with h5py.File(ours, "r") as f:
        coords = f["coords"][()]
    mpp = slide.scale[-1]
    centre = (coords[:, ::-1] + smap.grid.size_level0 / 2) * mpp  # level-0 px box centre -> um (y, x)
    for i in (0, len(coords) // 2, len(coords) - 1):
        data = labels.world_to_data(centre[i])
        # the tile's label under its slide position
        value = int(labels.data[tuple(np.round(data).astype(int))])
        assert value == i * smap.n_clusters + smap.clusters[i]
        assert labels.features["tile"][labels._label_index[value]] == i  # what hovering it shows
    from napari_pathdistill._qt.embed_widget import EmbedWidget, map_layer_at

    widget = EmbedWidget(viewer)  # the Embed widget's click handler answers on the reader's map layer
    viewer.window.add_dock_widget(widget)
    hit = map_layer_at(viewer, centre[i])
    assert hit == (labels, i)
    widget.search_tile(hit[1], hit[0])  # as a click: top-k points, heatmap and the search line
    similar = viewer.layers["similar tiles"]
    assert similar.features["tile"].iloc[0] == i and len(similar.data) > 1
    viewer.window.show()
    viewer.reset_view()
    save_screenshot(viewer, "feature_reader.png")


def _as_layout(src: Path, dst: Path, layout: str) -> Path:
    """``src``'s features and coords as CLAM (int coords, patch_size/downsample attrs) or TRIDENT (coords attrs
    with patch_size_level0 and magnifications) write them: neither stores the slide's path or um/px."""
    with h5py.File(src, "r") as f:
        feats, coords, size = f["features"][()], f["coords"][()], int(f.attrs["patch_size_level0"])
    with h5py.File(dst, "w") as f:
        f.create_dataset("features", data=feats)
        c = f.create_dataset("coords", data=coords.astype(np.int32) if layout == "clam" else coords)
        attrs = (
            {"patch_level": 0, "patch_size": size, "downsample": [1.0, 1.0]}
            if layout == "clam"
            else {
                "patch_size": 224,
                "patch_size_level0": size,
                "level0_magnification": 20,
                "target_magnification": 10,
            }
        )
        c.attrs.update(attrs)  # fmt: skip
    return dst


@pytest.mark.parametrize("layout", ["clam", "trident"])
def test_clam_and_trident_files_land_on_their_open_slide(make_napari_viewer, ours, tmp_path, layout):
    """A CLAM / TRIDENT file named after its slide (``<slide_id>.h5``) dropped on the viewer showing that slide
    takes the slide's um/px (before: CLAM's map was placed in level-0 px on a slide shown in um, twice the
    slide's size; TRIDENT's at 10 / 20x = 0.5 um/px instead of 0.499)."""
    viewer = make_napari_viewer()
    [slide] = viewer.open(str(SLIDE), plugin="napari-pathdistill")
    path = _as_layout(ours, tmp_path / f"{SLIDE.stem}.h5", layout)
    layers = viewer.open(str(path), plugin="napari-pathdistill")
    assert [ly.name for ly in layers] == [f"{slide.name} embedding map", f"{slide.name} clusters"]
    labels = layers[1]
    assert tuple(str(u) for u in labels.units) == ("micrometer", "micrometer")
    smap = labels.metadata["pathdistill"]["slide_map"]
    with h5py.File(ours, "r") as f:
        coords = f["coords"][()]
    far = len(coords) - 1  # the tile farthest from the origin: where a wrong um/px shows most
    centre = (coords[far, ::-1] + smap.grid.size_level0 / 2) * slide.scale[-1]
    value = int(labels.data[tuple(np.round(labels.world_to_data(centre)).astype(int))])
    assert value == far * smap.n_clusters + smap.clusters[far]
    np.testing.assert_allclose(np.asarray(labels.extent.world)[1], np.asarray(layers[0].extent.world)[1])
    assert np.asarray(labels.extent.world)[1, -1] <= np.asarray(slide.extent.world)[1, -1] + 1


def test_drop_on_empty_viewer_opens_the_stored_slide(make_napari_viewer, ours, tmp_path):
    viewer = make_napari_viewer()
    layers = viewer.open(str(ours), plugin="napari-pathdistill")
    slide = layers[0]
    assert slide.metadata["pathdistill"]["path"] == str(SLIDE) or Path(slide.source.path).resolve() == SLIDE
    assert [ly.name for ly in layers[-2:]] == [f"{slide.name} embedding map", f"{slide.name} clusters"]
    assert layers[-1].metadata["pathdistill"]["slide_layer"] == slide.name
    moved = tmp_path / "moved.h5"  # the slide is gone: map layers only, and the user is told which file
    moved.write_bytes(ours.read_bytes())
    with h5py.File(moved, "a") as f:
        f.attrs["slide_path"] = str(tmp_path / "gone.svs")
    from napari.utils.notifications import notification_manager

    seen = len(notification_manager.records)
    only = get_feature_reader(str(moved))(str(moved))  # type: ignore[misc]
    assert [kind for _, _, kind in only] == ["image", "labels"]
    assert any("gone.svs is missing" in str(n.message) for n in notification_manager.records[seen:])


def test_file_of_a_slide_without_mpp_cut_at_an_override_lands_on_its_pixels(make_napari_viewer, tmp_path):
    """`pathdistill embed --mpp-override 2` on the TCGA slide (no MPP in its file): tiles of 448 level-0 px. napari
    shows that slide in level-0 pixels, so the dropped file's map is placed in pixels on its tiles, not in um."""
    import dataclasses

    model = tiny_model("vit")
    model.spec = dataclasses.replace(model.spec, mpp=16.0)
    tcga = SLIDE.parent / "tcga-cr-7395-01a-01-ts1.svs"
    h5 = embed_slide(tcga, model, tmp_path, fallback_mpp=2.0, min_tissue=0.5, num_workers=0)
    viewer = make_napari_viewer()
    [slide] = viewer.open(str(tcga), plugin="napari-pathdistill")
    labels = viewer.open(str(h5), plugin="napari-pathdistill")[-1]
    assert tuple(slide.scale[-2:]) == (1.0, 1.0) and tuple(labels.scale[-2:]) == (448.0, 448.0)
    assert tuple(str(u) for u in labels.units) == tuple(str(u) for u in slide.units)
    smap = labels.metadata["pathdistill"]["slide_map"]
    with h5py.File(h5, "r") as f:
        coords = f["coords"][()]
    centre = coords[:, ::-1] + (448 - 1) / 2  # level-0 px = the slide layer's world units
    for i in (0, len(coords) // 2, len(coords) - 1):
        value = labels.get_value(tuple(centre[i]), world=True)
        assert labels.features["tile"][labels._label_index[value]] == i
        assert value == i * smap.n_clusters + smap.clusters[i]


def test_non_feature_h5_not_claimed(tmp_path):
    p = tmp_path / "image.h5"
    with h5py.File(p, "w") as f:
        f.create_dataset("image", data=np.zeros((4, 4)))
    assert get_feature_reader(str(p)) is None
    bad = tmp_path / "bad.h5"
    bad.write_bytes(b"not hdf5")
    assert get_feature_reader(str(bad)) is None


def _click(widget, position) -> None:
    """A press and release at ``position`` (world) through the Embed widget's mouse callback, as napari runs it."""
    from types import SimpleNamespace

    event = SimpleNamespace(button=1, position=position, type="mouse_press")
    gen = widget._on_click(widget.viewer, event)
    next(gen)
    event.type = "mouse_release"
    with pytest.raises(StopIteration):
        next(gen)


def test_clam_contour_grid_hover_and_export_keep_the_files_coords(make_napari_viewer, ours, tmp_path):
    """CLAM's h5_files/<slide>.h5 of one tissue contour whose bounding box starts at level-0 (100, 60): its 256
    px grid runs through (100, 60), not 0. The map sat right, but hovering a tile showed x, y 100 and 60 px off
    the file's coords, and the tile search's GeoJSON put every square 100 px left and 60 px up of its tile
    (50 and 30 um: onto the neighbouring tissue in QuPath)."""
    from napari_pathdistill._qt.embed_widget import EmbedWidget

    xx, yy = np.meshgrid(np.arange(100, 1900, 256), np.arange(60, 2800, 256), indexing="ij")
    coords = np.array([xx.flatten(), yy.flatten()]).T.astype(np.int32)  # process_contour's order
    with h5py.File(ours, "r") as f:
        feats = np.resize(f["features"][()], (len(coords), f["features"].shape[1]))
    path = tmp_path / f"{SLIDE.stem}.h5"
    with h5py.File(path, "w") as f:  # utils/file_utils.save_hdf5: chunks of 32 rows, resizable, no attrs
        for key, val in (("features", feats), ("coords", coords)):
            f.create_dataset(key, data=val, maxshape=(None, val.shape[1]), chunks=(32, val.shape[1]))
    viewer = make_napari_viewer()
    [slide] = viewer.open(str(SLIDE), plugin="napari-pathdistill")
    labels = viewer.open(str(path), plugin="napari-pathdistill")[1]
    smap = labels.metadata["pathdistill"]["slide_map"]
    mpp, i = slide.scale[-1], 17
    centre = (coords[i, ::-1] + 127.5) * mpp  # tile i's box centre in um (y, x)
    value = int(labels.data[tuple(np.round(labels.world_to_data(centre)).astype(int))])
    assert value == i * smap.n_clusters + smap.clusters[i]  # the tile's cell is over its tissue
    row = labels._label_index[value]  # what hovering it shows
    assert (labels.features["x"][row], labels.features["y"][row]) == tuple(coords[i])
    widget = EmbedWidget(viewer)
    viewer.window.add_dock_widget(widget)
    _click(widget, centre)
    assert viewer.layers["similar tiles"].features["tile"].iloc[0] == i
    doc = json.loads(widget.search.export(tmp_path / "top.geojson", kind="similar tiles (top k)").read_text())
    ring = doc["features"][0]["geometry"]["coordinates"][0]
    x, y = coords[i]
    assert ring == [[x, y], [x + 256, y], [x + 256, y + 256], [x, y + 256], [x, y]]


def test_clam_file_of_an_ome_tiff_lands_on_its_open_slide(make_napari_viewer, os2_pair, tmp_path):
    """CLAM (``slide_id = name.split(slide_ext)[0]``) and TRIDENT (``splitext`` knowing ``.ome.tif``) name the
    features of OS-2-ndpi.ome.tif ``OS-2-ndpi.h5``. Its open slide was looked up as ``OS-2-ndpi.ome`` (the
    path's stem) and not found: the map was placed in level-0 px over the slide shown in um, 4.4x its size."""
    viewer = make_napari_viewer()
    [slide] = viewer.open(str(os2_pair[0]), plugin="napari-pathdistill")
    xx, yy = np.meshgrid(np.arange(0, 2000, 256), np.arange(0, 2000, 256), indexing="ij")
    coords = np.array([xx.flatten(), yy.flatten()]).T.astype(np.int32)
    path = tmp_path / "OS-2-ndpi.h5"
    with h5py.File(path, "w") as f:  # h5_files/<slide_id>.h5: no attrs, no slide path, no um/px
        f["features"] = np.random.default_rng(0).normal(size=(len(coords), 8)).astype(np.float32)
        f["coords"] = coords
    labels = viewer.open(str(path), plugin="napari-pathdistill")[1]
    assert labels.metadata["pathdistill"]["slide_layer"] == slide.name
    assert tuple(str(u) for u in labels.units) == ("micrometer", "micrometer")
    smap, mpp, i = labels.metadata["pathdistill"]["slide_map"], slide.scale[-1], len(coords) - 1
    centre = (coords[i, ::-1] + 127.5) * mpp  # the farthest tile's box centre on the slide, in um
    value = int(labels.data[tuple(np.round(labels.world_to_data(centre)).astype(int))])
    assert value == i * smap.n_clusters + smap.clusters[i]


def test_trident_overlapping_tiles_export_their_own_side(make_napari_viewer, ours, tmp_path):
    """TRIDENT with ``--overlap 32`` (224 px patches at 20x on the 20x slide, 192 px apart): the map's cells are
    the 192 px step, but the tile search exported 192 px squares where ``pathdistill qupath`` writes the 224 px
    tiles; now both write the file's tiles."""
    from napari_pathdistill._qt.embed_widget import EmbedWidget
    from napari_pathdistill.cli.main import main

    ticks = [c * 224 - 32 * max(c - 1, 0) for c in range(11)]  # WSIPatcher._colrow_to_xy: 0, 224, 416, ...
    coords = np.array([(x, y) for x in ticks[1:] for y in ticks[1:]], np.int64)
    with h5py.File(ours, "r") as f:
        feats = np.resize(f["features"][()], (len(coords), f["features"].shape[1]))
    path = tmp_path / f"{SLIDE.stem}.h5"
    with h5py.File(path, "w") as f:  # IO.save_h5: one-row chunks, the patcher's attrs on coords
        for key, val in (("features", feats), ("coords", coords)):
            f.create_dataset(key, data=val, maxshape=(None, val.shape[1]), chunks=(1, val.shape[1]))
        f["coords"].attrs.update({"patch_size": 224, "patch_size_level0": 224, "level0_magnification": 20,
                                  "target_magnification": 20, "overlap": 32, "name": SLIDE.stem})  # fmt: skip
    viewer = make_napari_viewer()
    [slide] = viewer.open(str(SLIDE), plugin="napari-pathdistill")
    labels = viewer.open(str(path), plugin="napari-pathdistill")[1]
    assert labels.metadata["pathdistill"]["slide_map"].grid.size_level0 == 192  # cells: the step
    widget = EmbedWidget(viewer)
    viewer.window.add_dock_widget(widget)
    i = 37
    _click(widget, (coords[i, ::-1] + 96) * slide.scale[-1])
    panel = json.loads(widget.search.export(tmp_path / "p.geojson", kind="clusters").read_text())
    assert main(["qupath", str(path), "--out", str(tmp_path / "c.geojson"), "--clusters", "2"]) == 0
    cli = json.loads((tmp_path / "c.geojson").read_text())
    ring = [f["geometry"]["coordinates"][0] for f in panel["features"]]
    assert ring == [f["geometry"]["coordinates"][0] for f in cli["features"]]
    assert ring[i][0] == list(coords[i].astype(float)) and ring[i][2] == list((coords[i] + 224).astype(float))


def test_a_file_of_another_slide_or_scan_is_named_when_dropped(make_napari_viewer, ours, tmp_path):
    """A TRIDENT file of the TCGA slide saved as CMU-1-Small-Region.h5, or one of CMU's tiles made at a stated
    40x, was placed on the open CMU slide without a word: the TCGA tiles ran off the slide (to 4443 px), the 40x
    file's map lay on tissue it was not computed from. Each is now named in a notification saying why."""
    from napari.utils.notifications import notification_manager

    viewer = make_napari_viewer()
    viewer.open(str(SLIDE), plugin="napari-pathdistill")
    xs, ys = np.meshgrid(np.arange(0, 4443 - 224, 224), np.arange(0, 3567 - 224, 224))
    other = tmp_path / "other" / f"{SLIDE.stem}.h5"  # trident/IO.save_h5 of the TCGA slide (4443 x 3567)
    other.parent.mkdir()
    with h5py.File(other, "w") as f:
        f.create_dataset(
            "features", data=np.random.default_rng(0).normal(size=(xs.size, 8)).astype(np.float32)
        )
        c = f.create_dataset("coords", data=np.c_[xs.ravel(), ys.ravel()].astype(np.int64))
        c.attrs.update({"patch_size": 224, "patch_size_level0": 224, "level0_magnification": 20,
                        "target_magnification": 20, "overlap": 0, "name": "tcga-cr-7395-01a-01-ts1",
                        "level0_width": 4443, "level0_height": 3567})  # fmt: skip
    at40 = _as_layout(ours, tmp_path / f"{SLIDE.stem}.h5", "trident")
    with h5py.File(at40, "a") as f:
        f["coords"].attrs["level0_magnification"] = 40
    (tmp_path / "own").mkdir()
    own = _as_layout(ours, tmp_path / "own" / f"{SLIDE.stem}.h5", "trident")
    said = []
    for path in (other, at40, own):
        seen = len(notification_manager.records)
        labels = viewer.open(str(path), plugin="napari-pathdistill")[-1]
        assert labels.name.startswith(f"{SLIDE.name} clusters")  # on the open slide, as before
        said.append([str(n.message) for n in notification_manager.records[seen:]])
    past = int(((xs >= 2220) | (ys >= 2967)).sum())
    head = f"{SLIDE.stem}.h5 does not match {SLIDE.name} (2220 x 2967 level-0 px, 0.499 um/px): "
    assert said[0] == [
        head + f"it was made from a slide of 4443 x 3567 level-0 px; {past} of its {xs.size} tiles lie "
        "past the slide's edge (they reach 4256 x 3360 level-0 px). It is of another slide, or of another scan of "
        "this one: its map is shown but does not lie on this slide's tissue. Open the slide it was made from."
    ]
    assert len(said[1]) == 1 and said[1][0].startswith(
        head + "it was made at level-0 magnification 40x, where this slide is 20x. It is of another slide"
    )
    assert said[2] == []  # its own slide: nothing to say


def test_a_truncated_feature_file_says_it_is_truncated(make_napari_viewer, ours, tmp_path):
    """Found dropping a half-copied feature file on the viewer: the reader declined it like any other HDF5, so
    napari said only that the plugin "refused the file". An HDF5 that h5py cannot open is claimed (no reader
    can read it) and the error says what is wrong with it; a readable HDF5 of other data is still left alone."""
    from napari_pathdistill.inference.feature_files import FeatureFileError

    cut = tmp_path / "half.h5"
    data = ours.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    reader = get_feature_reader(str(cut))
    assert reader is not None
    with pytest.raises(FeatureFileError, match=r"half\.h5 cannot be read as HDF5 \(.*truncated file"):
        reader(str(cut))
    viewer = make_napari_viewer()
    with pytest.raises(Exception, match="truncated or not HDF5") as err:
        viewer.open(str(cut), plugin="napari-pathdistill")
    assert "refused the file" not in str(err.value)
    assert len(viewer.layers) == 0
