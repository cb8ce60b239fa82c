"""``pathdistill tiles``' preview.png on the real CMU-1-Small-Region slide: kept tiles outlined on their own
border pixels, drawn for all tiles at once; tiles too small to outline are tinted, leaving the tissue visible."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from napari_pathdistill.cli._preview import MIN_OUTLINE_PX, TILE_COLOUR, preview, tile_boxes
from napari_pathdistill.wsi import detect_tissue, make_tile_grid, open_pyramid


def _slide(cmu_svs: Path, tile_px: int) -> tuple:
    with open_pyramid(cmu_svs) as pyr:
        thumb, ds = pyr.thumbnail(512)
        mask = detect_tissue(pyr, thumbnail=(thumb, ds))
        grid = make_tile_grid(pyr, tile_px=tile_px, mask=mask)
    return thumb, mask, grid, ds


def test_outlines_are_the_border_pixels_of_every_kept_tile(cmu_svs: Path) -> None:
    thumb, mask, grid, ds = _slide(cmu_svs, 224)
    img = preview(thumb, mask.mask, grid.coords, grid.size_level0, ds)
    yellow = (img == TILE_COLOUR.astype(np.uint8)).all(-1)
    expected = np.zeros_like(yellow)
    for r0, r1, c0, c1 in tile_boxes(grid.coords, grid.size_level0, ds, thumb.shape[:2]):
        assert r1 - r0 >= MIN_OUTLINE_PX and c1 - c0 >= MIN_OUTLINE_PX
        expected[r0:r1, c0:c1] = True
        expected[r0 + 1 : r1 - 1, c0 + 1 : c1 - 1] = False
    np.testing.assert_array_equal(yellow, expected)


def test_tiles_too_small_to_outline_are_tinted_not_painted_over(cmu_svs: Path) -> None:
    """16 px tiles at 0.5 um/px are 2.8 thumbnail px: their outlines (1 px outside each tile, before) covered
    every tile, and the tissue under them, in solid yellow."""
    thumb, mask, grid, ds = _slide(cmu_svs, 16)
    assert grid.size_level0 / ds < 3 and len(grid) > 5000
    img = preview(thumb, mask.mask, grid.coords, grid.size_level0, ds).astype(float)
    inside = np.zeros(thumb.shape[:2], bool)
    for r0, r1, c0, c1 in tile_boxes(grid.coords, grid.size_level0, ds, thumb.shape[:2]):
        inside[r0:r1, c0:c1] = True
    assert inside.mean() > 0.2 and not (img[~inside] == TILE_COLOUR).all(-1).any()  # glass left alone
    tinted = img[inside]
    # the tissue's own contrast shows through the tint (solid yellow has none)
    assert (tinted == TILE_COLOUR).all(-1).mean() < 0.01 and tinted.std(0).max() > 10
