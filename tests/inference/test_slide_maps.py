"""``SlideMap.tile_at`` / ``tile_centers`` on a hand-written 2 x 3 index raster, in napari's pixel-centre
convention (data pixel r covers [r - 0.5, r + 0.5) and is centred at ``translate + r * scale`` in the world)."""

from __future__ import annotations

import numpy as np
import pytest

from napari_pathdistill.inference.slide_maps import SlideMap


def _map() -> SlideMap:
    # raster cells hold tile index + 1: tile 0 at (0, 1), tile 1 at (1, 0), tile 2 at (1, 2); 0 = no tile
    index = np.array([[0, 1, 0], [2, 0, 3]], np.int32)
    n = 3
    return SlideMap(
        features=np.zeros((n, 4), np.float32),
        grid=None,  # type: ignore[arg-type]  # tile_at / tile_centers read only the raster and its placement
        rgb=np.zeros((n, 3)),
        clusters=np.ones(n, np.int64),
        pcs=np.zeros((n, 1)),
        index_image=index,
        scale=(112.0, 112.0),
        translate=(55.5, 55.5),
        model_name="hand",
    )


@pytest.mark.parametrize(
    "row,col,tile",
    [
        (0.0, 1.0, 0),  # cell centres
        (1.0, 0.0, 1),
        (1.0, 2.0, 2),
        (-0.49, 0.51, 0),  # anywhere inside cell (0, 1): [-0.5, 0.5) x [0.5, 1.5)
        (0.49, 1.49, 0),
        (0.51, -0.49, 1),  # the upper-left corner region of cell (1, 0)
        (1.49, 2.49, 2),
        (0.49, 0.49, None),  # cell (0, 0) holds no tile
        (0.0, 1.51, None),  # just inside cell (0, 2): no tile
        (-0.51, 1.0, None),  # above the raster
        (1.0, 2.5, None),  # past its last column
    ],
)
def test_tile_at_uses_the_cell_whose_pixel_contains_the_position(row, col, tile) -> None:
    assert _map().tile_at(row, col) == tile


def test_tile_centers_are_translate_plus_cell_times_scale() -> None:
    m = _map()
    np.testing.assert_array_equal(m.tile_centers(), [[55.5, 167.5], [167.5, 55.5], [167.5, 279.5]])
    # a map layer moved with its slide: its own scale / translate
    np.testing.assert_array_equal(m.tile_centers((2.0, 3.0), (10.0, 20.0)), [[10, 23], [12, 20], [12, 26]])
