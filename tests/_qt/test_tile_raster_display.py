"""The tile grid of a large slide as napari draws it: no stripes, at any zoom (screenshots of the real canvas).

A 1,000 x 600 tile grid (e.g. 100 px tiles on a 100k px slide) was one raster of 2 px per tile without gaps, whose
ids alternate along a row only: zoomed in, the tiles of a column shared one colour (vertical stripes, no tile
edges between rows); zoomed out, several tiles per screen pixel aliased into bands of the two colours.
"""

from __future__ import annotations

import numpy as np
import pytest

from napari_pathdistill._qt.tissue_widget import TILE_COLOURS, tile_colormap
from napari_pathdistill.wsi.tiling import TileGrid
from napari_pathdistill.wsi.tissue_grid import tile_id_raster

pytestmark = pytest.mark.napari

ROWS, COLS, SIZE = 600, 1000, 100.0


def _full_grid() -> TileGrid:
    r, c = np.divmod(np.arange(ROWS * COLS), COLS)
    coords = np.stack([c * 100, r * 100], axis=1).astype(np.int64)
    return TileGrid(coords, 50, 0.5, SIZE, 0, np.ones(len(coords)), (int(ROWS * SIZE), int(COLS * SIZE)))


def _classes(shot: np.ndarray) -> np.ndarray:
    """Each screen pixel as 1 / 2 (nearest of the two tile colours) or 0 (neither: gap, background)."""
    rgb = shot[..., :3].astype(float)
    cols = np.array([c[:3] for c in TILE_COLOURS]) * 255
    d = np.linalg.norm(rgb[..., None, :] - cols, axis=-1)
    return np.where(d.min(-1) < 30, d.argmin(-1) + 1, 0)


def test_a_1000_tile_wide_grid_is_an_even_tint_zoomed_out_and_a_checkerboard_zoomed_in(
    make_napari_viewer, qtbot
) -> None:
    grid = _full_grid()
    raster = tile_id_raster(grid)
    viewer = make_napari_viewer(show=True)
    viewer.window._qt_window.resize(1000, 800)
    viewer.add_labels(raster.data, scale=raster.scale, translate=raster.translate, colormap=tile_colormap(), opacity=1.0,
                      multiscale=getattr(raster, "multiscale", False))  # fmt: skip
    viewer.reset_view()
    qtbot.wait(300)
    shot = _classes(viewer.screenshot(canvas_only=True, flash=False))
    h, w = shot.shape
    inner = shot[h // 2 - 100 : h // 2 + 100, w // 2 - 150 : w // 2 + 150]  # well inside the grid
    # ~1,000 tiles on a ~1,000 px canvas: one colour, not bands of both (before: ~50 % each)
    assert (inner == 1).mean() > 0.99, np.bincount(inner.ravel(), minlength=3)
    viewer.camera.zoom *= 40  # ~25 tiles across the view: ~35 screen px per tile
    qtbot.wait(300)
    shot = _classes(viewer.screenshot(canvas_only=True, flash=False))
    h, w = shot.shape
    down, along = shot[:, w // 2 + 7], shot[h // 2 + 7]  # off the centre: it lies on a tile edge (a gap line)
    for line in (down, along):
        runs = line[line > 0]
        changes = int((runs[1:] != runs[:-1]).sum())
        # the colour changes from each tile to the next, downward too (before: no change down a column)
        assert changes >= 0.5 * len(line) / 40, (changes, len(line))
    # the grid's lines: a pixel of neither colour between tiles, down a column and along a row
    assert (down == 0).sum() >= 10 and (along == 0).sum() >= 10
