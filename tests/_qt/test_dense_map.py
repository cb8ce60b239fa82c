"""show_dense_map in a real viewer on CMU-1-Small-Region opened through our reader: layer, in-place update,
alignment of the patch cells with the tiles' slide positions; screenshot beside the tile-level map."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from napari_pathdistill._qt.dense_map import show_dense_map
from napari_pathdistill.inference.dense_maps import iter_dense_map
from napari_pathdistill.models.testing import tiny_model
from napari_pathdistill.progress import drain

pytestmark = pytest.mark.napari

DOCS_IMAGES = Path(__file__).resolve().parents[2] / "docs" / "images"


@pytest.fixture(scope="module")
def vit224():
    return tiny_model("vit", tile_px=224)


def test_layer_is_aligned_with_the_slide_and_updated_in_place(make_napari_viewer, cmu_svs, vit224):
    viewer = make_napari_viewer()
    slide = viewer.open(str(cmu_svs), plugin="napari-pathdistill")[0]
    res = drain(iter_dense_map(vit224, cmu_svs, mpp=1.0, min_tissue=0.1, max_tiles=4))
    layer = show_dense_map(viewer, res, slide.name, slide.units)
    assert (
        layer.name == f"{slide.name} patch-token map"
        and layer.rgb
        and layer.data.shape == (*res.valid.shape, 4)
    )
    assert layer.units == slide.units
    np.testing.assert_array_equal(layer.data[..., 3] == 255, res.valid)
    size = res.grid.size_level0
    for (x, y), (r, c) in zip(res.grid.coords, res.offsets, strict=True):
        # outer corners of the tile's 16 x 16 cells (pixel edges: +-0.5) = the tile's level-0 corners on the slide
        for dr, dc, d0 in ((-0.5, -0.5, -0.5), (15.5, 15.5, size - 0.5)):
            got = layer.data_to_world((r + dr, c + dc))
            want = slide.data_to_world((y + d0, x + d0))
            np.testing.assert_allclose(np.asarray(got)[-2:], np.asarray(want)[-2:], atol=slide.scale[-1])
    again = drain(iter_dense_map(vit224, cmu_svs, mpp=1.0, min_tissue=0.1, max_tiles=6, stride_px=112))
    assert show_dense_map(viewer, again, slide.name, slide.units) is layer  # in place, not a second layer
    assert [lyr.name for lyr in viewer.layers].count(layer.name) == 1
    assert layer.data.shape == (*again.valid.shape, 4)
    np.testing.assert_allclose(layer.scale, again.scale)


def _hover(viewer, world_yx) -> str:
    """The status line with the cursor at ``world_yx`` over the canvas (what a mouse move sets), as napari's
    status thread computes it (``_calc_status_from_cursor``; the window shows it a moment later)."""
    viewer.mouse_over_canvas = True
    viewer.cursor.position = tuple(world_yx)
    status, _tooltip = viewer._calc_status_from_cursor()
    return status["coordinates"] if isinstance(status, dict) else status


def test_hover_names_the_tile_the_patch_and_its_pca_scores(make_napari_viewer, qtbot, cmu_svs, vit224):
    """The cursor over a cell of two different tiles: the status names that tile's level-0 (x, y), the patch
    within it and the cell's 3 PCA scores (before: only the RGBA value); over a gap, only the value."""
    viewer = make_napari_viewer()
    slide = viewer.open(str(cmu_svs), plugin="napari-pathdistill")[0]
    res = drain(iter_dense_map(vit224, cmu_svs, mpp=1.0, min_tissue=0.1, max_tiles=4))
    layer = show_dense_map(viewer, res, slide.name, slide.units)
    assert viewer.layers.selection.active is layer
    for i, (pr, pc) in ((1, (3, 12)), (3, (15, 0))):
        r, c = res.offsets[i] + (pr, pc)
        world = layer.data_to_world((r + 0.2, c - 0.3))  # anywhere in the cell
        text = _hover(viewer, world)
        x, y = res.grid.coords[i]
        s = res.scores[r, c]
        assert f"tile x: {x}, y: {y}; patch: row {pr}, col {pc} of 16 x 16" in text
        assert f"pc1: {s[0]:.3g}, pc2: {s[1]:.3g}, pc3: {s[2]:.3g}" in text and "mean of" not in text
        assert text == layer.get_status(world, world=True)["coordinates"]
        # the window's status, set by napari's status thread (not started in tests: its step run here)
        viewer.window._qt_window.status_thread.calculate_status()
        qtbot.waitUntil(lambda t=text: isinstance(viewer.status, dict) and viewer.status["coordinates"] == t)
    r, c = np.argwhere(~res.valid)[0]
    assert "tile" not in _hover(viewer, layer.data_to_world((r, c)))


def test_overlapping_tiles_hover_the_nearest_and_say_the_mean(make_napari_viewer, cmu_svs, vit224):
    viewer = make_napari_viewer()
    slide = viewer.open(str(cmu_svs), plugin="napari-pathdistill")[0]
    res = drain(iter_dense_map(vit224, cmu_svs, mpp=1.0, min_tissue=0.1, max_tiles=8, stride_px=112))
    layer = show_dense_map(viewer, res, slide.name, slide.units)
    r, c = np.argwhere(res.counts == 4)[0]
    i, pr, pc = res.patch_at(r, c)
    x, y = res.grid.coords[i]
    text = _hover(viewer, layer.data_to_world((r, c)))
    assert (
        f"tile x: {x}, y: {y}; patch: row {pr}, col {pc} of 16 x 16" in text and "(mean of 4 tiles)" in text
    )


def test_metadata_binds_the_map_to_its_slide_and_survives_an_update(
    make_napari_viewer, cmu_svs, vit224, tmp_path
):
    """The map layer records its slide file, model and geometry under the tile-level feature file's attr names
    (and the slide layer's name, as the clusters layer does); a re-run with a stride updates them in place. It is
    still an image to napari: saved by napari's own writer, and not offered as a slide to the widgets."""
    from napari_pathdistill._qt._layers import slide_layers

    viewer = make_napari_viewer()
    slide = viewer.open(str(cmu_svs), plugin="napari-pathdistill")[0]
    res = drain(iter_dense_map(vit224, cmu_svs, mpp=1.0, min_tissue=0.1, max_tiles=2))
    layer = show_dense_map(viewer, res, slide.name, slide.units)
    meta = layer.metadata["pathdistill"]
    assert meta["slide_path"] == str(Path(slide.metadata["pathdistill"]["path"]).resolve())
    assert (meta["model"], meta["tile_px"], meta["mpp"], meta["stride_px"]) == (
        vit224.spec.name,
        224,
        1.0,
        224,
    )
    assert meta["slide_layer"] == slide.name and meta["dense_map"] is res
    again = drain(iter_dense_map(vit224, cmu_svs, mpp=1.0, min_tissue=0.1, max_tiles=2, stride_px=112))
    assert show_dense_map(viewer, again, slide.name, slide.units) is layer
    assert (
        layer.metadata["pathdistill"]["stride_px"] == 112
        and layer.metadata["pathdistill"]["dense_map"] is again
    )
    assert slide_layers(viewer) == [slide]
    saved = layer.save(str(tmp_path / "map.tif"))
    assert saved and (tmp_path / "map.tif").is_file()


def test_student_map_is_finer_than_the_tile_map(make_napari_viewer, qtbot, cmu_svs):
    """The bundled student over the whole slide: inside each tile the patch-token colours vary (tissue
    structure), unlike the one colour per tile of the tile-level map. Screenshot slide | tiles | patch tokens."""
    from napari_pathdistill.inference.dense_maps import patch_size
    from napari_pathdistill.inference.slide_maps import iter_slide_map
    from napari_pathdistill.models import load_model

    student = load_model("pathdistill-student", device="cpu")
    dense = drain(iter_dense_map(student, cmu_svs))
    tiles = drain(iter_slide_map(student, cmu_svs, k=2))
    side = student.spec.tile_px // patch_size(student)  # 224 / 16 = 14 tokens a side for the v2 student
    assert dense.patch_grid == (side, side) and len(dense.grid) == len(tiles.features)
    spread = [dense.rgb[r : r + side, c : c + side].reshape(-1, 3).std(0).max() for r, c in dense.offsets]
    assert np.median(spread) > 15  # colour varies within tiles
    viewer = make_napari_viewer(show=True)
    slide = viewer.open(str(cmu_svs), plugin="napari-pathdistill")[0]
    rgba = np.concatenate([tiles.raster(tiles.rgb), (tiles.index_image > 0)[..., None]], axis=-1)
    tile_layer = viewer.add_image(rgba.astype(np.float32), rgb=True, scale=tiles.scale, translate=tiles.translate,
                                  units=slide.units, name="tile-level map")  # fmt: skip
    dense_layer = show_dense_map(viewer, dense, slide.name, slide.units)
    dense_layer.opacity = tile_layer.opacity = 1.0
    viewer.window._qt_window.resize(700, 900)
    viewer.reset_view()
    qtbot.waitUntil(lambda: slide.loaded, timeout=30_000)
    shots = []
    for shown in (None, tile_layer, dense_layer):
        tile_layer.visible, dense_layer.visible = shown is tile_layer, shown is dense_layer
        qtbot.wait(200)
        shots.append(viewer.screenshot(canvas_only=True, flash=False))
    assert np.abs(shots[1].astype(int) - shots[2].astype(int)).mean() > 5  # the two maps differ on screen
    if os.environ.get("PATHDISTILL_SAVE_SCREENSHOTS"):
        from skimage.io import imsave

        gap = np.full((shots[0].shape[0], 8, 4), 255, np.uint8)
        imsave(
            DOCS_IMAGES / "dense_map.png",
            np.hstack([shots[0], gap, shots[1], gap, shots[2]]),
            check_contrast=False,
        )
