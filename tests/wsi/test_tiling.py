"""Tile grids (geometry, tissue fractions, tile reads, layer placement) on real slides, checked against direct computations."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import openslide
import pytest

from napari_pathdistill.wsi import (
    TissueMask,
    detect_tissue,
    grid_to_image,
    grid_to_shapes,
    make_tile_grid,
    open_pyramid,
    read_tiles,
)


def test_grid_geometry_and_tissue_fraction(cmu_svs: Path) -> None:
    from skimage.transform import resize

    with open_pyramid(cmu_svs) as pyr:
        tm = detect_tissue(pyr, max_size=1024)
        full = make_tile_grid(pyr, min_tissue=0.0, mask=tm)
        kept = make_tile_grid(pyr, min_tissue=0.5, mask=tm)
    size = 224 * 0.5 / 0.499
    assert full.size_level0 == pytest.approx(size) and full.mpp == 0.5 and full.level == 0
    assert full.grid_shape == (int(2967 // size), int(2220 // size)) and len(full) == 13 * 9
    np.testing.assert_array_equal(full.coords[10], [round(1 * size), round(1 * size)])  # row 1, col 1
    # independent tissue fraction: nearest-upsample the mask to level 0 and average each tile box
    up = resize(tm.mask.astype(float), (2967, 2220), order=0) > 0.5
    direct = np.array([up[y : y + round(size), x : x + round(size)].mean() for x, y in full.coords])
    assert np.abs(direct - full.tissue_fraction).max() < 0.05
    assert len(kept) == int((full.tissue_fraction >= 0.5).sum()) and 0 < len(kept) < len(full)
    assert (kept.tissue_fraction >= 0.5).all()


def test_tissue_fractions_are_exact_box_means_in_about_4_bytes_per_mask_pixel(cmu_svs: Path) -> None:
    """The summed-area table was a float64 copy of the mask plus two float64 cumulative sums (~32 bytes per mask
    pixel: 100 MB on the 2048 x 1536 mask of a 40k x 30k slide, the peak of tissue detection in the Embed
    widget); it is an int32 table filled in place. Fractions are the exact means of the mask's boxes."""
    import tracemalloc

    from napari_pathdistill.wsi.tiling import tissue_fractions

    with open_pyramid(cmu_svs) as pyr:
        tm = detect_tissue(pyr, max_size=1024)
        grid = make_tile_grid(pyr, min_tissue=0.0, mask=tm)
    tracemalloc.start()
    frac = tissue_fractions(tm, grid.coords, grid.size_level0)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 8 * tm.mask.size, f"{peak / tm.mask.size:.1f} bytes per mask pixel"  # was ~32
    ds, size = tm.downsample, grid.size_level0
    for (x, y), f in zip(grid.coords, frac, strict=True):
        x0, y0 = int(np.floor(x / ds + 0.5)), int(np.floor(y / ds + 0.5))
        x1, y1 = int(np.floor((x + size) / ds + 0.5)), int(np.floor((y + size) / ds + 0.5))
        assert f == tm.mask[y0:y1, x0:x1].mean()  # exact: both are count / area
    assert ((frac > 0) & (frac < 1)).any() and frac.max() == 1  # partial boxes at the tissue edge


def test_read_tiles_level0_equals_openslide(cmu_svs: Path) -> None:
    with open_pyramid(cmu_svs) as pyr, openslide.OpenSlide(str(cmu_svs)) as slide:
        grid = make_tile_grid(pyr, min_tissue=0.5)
        tiles = read_tiles(pyr, grid, [0, len(grid) - 1])
        for tile, (x, y) in zip(tiles, grid.coords[[0, -1]], strict=True):
            ref = np.asarray(slide.read_region((int(x), int(y)), 0, (224, 224)).convert("RGB"))
            np.testing.assert_array_equal(tile, ref)
    assert tiles.shape == (2, 224, 224, 3) and tiles.dtype == np.uint8


def test_read_tiles_from_coarser_level_is_antialiased_downsample(tcga_svs: Path) -> None:
    """No MPP on this slide: fallback 0.25 um/px; 1 um/px tiles = 896 level-0 px read at level 1, resized."""
    with open_pyramid(tcga_svs) as pyr:
        assert make_tile_grid(pyr, min_tissue=0.0).mpp is None  # no MPP: level-0 pixels
    with open_pyramid(tcga_svs, fallback_mpp=0.25) as pyr:
        grid = make_tile_grid(pyr, mpp=1.0, min_tissue=0.5)
        assert grid.size_level0 == 896 and grid.level == 1 and grid.mpp == 1.0
        tile = read_tiles(pyr, grid, [0])[0].astype(float)
        x, y = grid.coords[0]
        big = pyr.read_region((int(x), int(y)), 0, (896, 896)).astype(float)
    block_mean = big.reshape(224, 4, 224, 4, 3).mean(axis=(1, 3))  # 4x box filter of level 0
    assert np.abs(tile - block_mean).mean() < 6.0
    assert np.corrcoef(tile.ravel(), block_mean.ravel())[0, 1] > 0.97


def test_grid_to_image_aligns_with_slide_layer(cmu_svs: Path) -> None:
    with open_pyramid(cmu_svs) as pyr:
        grid = make_tile_grid(pyr, min_tissue=0.5, mask=detect_tissue(pyr, max_size=512))
    values = np.arange(1, len(grid) + 1, dtype=np.int32)
    img, scale, translate = grid_to_image(grid, values, fill=0)
    assert img.shape == grid.grid_shape and img.dtype == np.int32
    assert (img > 0).sum() == len(grid)
    k = len(grid) // 2
    r, c = np.argwhere(img == values[k])[0]
    # centre of the cell in layer units (um) == centre of tile k's level-0 pixels times slide MPP. Level-0
    # pixel i is centred on i * mpp in the slide layer, so tile (x, y) spans pixels x .. x + size - 1 and its
    # centre is x + (size - 1) / 2. Tile coords are rounded to whole pixels, the raster's cells are not: every
    # cell lands within half a level-0 pixel of its tile (a half-pixel shift of the raster breaks this).
    x, y = grid.coords[k]
    centre_um = (np.array([y, x]) + (grid.size_level0 - 1) / 2) * 0.499
    np.testing.assert_allclose(np.array([r, c]) * scale + translate, centre_um, atol=0.499)
    cells = np.argwhere(img > 0)  # every kept tile: (row, col) of value v is tile v - 1
    centres = (grid.coords[img[cells[:, 0], cells[:, 1]] - 1][:, ::-1] + (grid.size_level0 - 1) / 2) * 0.499
    err = np.abs(cells * np.asarray(scale) + np.asarray(translate) - centres)
    assert err.max() <= 0.5 * 0.499 + 1e-9 and err.max() > 0.1 * 0.499  # the rounding is there, and bounded
    nan_img, _, _ = grid_to_image(grid, values.astype(float)[:, None].repeat(2, 1), fill=np.nan)
    assert nan_img.shape == (*grid.grid_shape, 2) and np.isnan(nan_img).sum() == 2 * (img.size - len(grid))
    rects = grid_to_shapes(grid)
    assert rects.shape == (len(grid), 4, 2)
    # outlines on pixel edges: tile k covers [x - 0.5, x - 0.5 + size) level-0 px, exactly centred on its tile
    np.testing.assert_allclose(rects[k].mean(axis=0), centre_um, rtol=0, atol=1e-9)
    top_left = (np.array([y, x]) - 0.5) * 0.499
    side = grid.size_level0 * 0.499
    corners = np.array([[0, 0], [0, side], [side, side], [side, 0]])
    np.testing.assert_allclose(rects[k], top_left + corners, atol=1e-9)


def test_empty_mask_gives_empty_grid(cmu_svs: Path) -> None:
    with open_pyramid(cmu_svs) as pyr:
        grid = make_tile_grid(pyr, mask=TissueMask(np.zeros((64, 48), bool), 2967 / 64))
    assert len(grid) == 0 and grid.coords.shape == (0, 2)


def _aniso_slide(path: Path, cmu_svs: Path, mpp_x: float, mpp_y: float) -> Path:
    import tifffile

    with openslide.OpenSlide(str(cmu_svs)) as s:
        rgb = np.asarray(s.read_region((0, 0), 0, s.dimensions).convert("RGB"))
    tifffile.imwrite(path, rgb, tile=(256, 256), photometric="rgb", compression="zlib",
                     metadata={"PhysicalSizeX": mpp_x, "PhysicalSizeY": mpp_y})  # fmt: skip
    return path


def test_non_square_pixels_are_tiled_within_1_percent_or_refused(cmu_svs: Path, tmp_path: Path) -> None:
    """MPP-X 0.25, MPP-Y 0.5: square level-0 tiles at the mean um/px (0.375) were 75 um wide and 149 um high for
    112 um asked, silently. Such a slide is now refused, by the core, ``pathdistill tiles`` (exit 1, nothing
    written) and the widget's core call; at a 1 % anisotropy the tiles are 112 um within 1 % on both axes."""
    from napari_pathdistill.cli.main import main
    from napari_pathdistill.errors import WSIError
    from napari_pathdistill.wsi.tissue_grid import tissue_grid

    slide = _aniso_slide(tmp_path / "aniso.ome.tif", cmu_svs, 0.25, 0.5)
    with (
        open_pyramid(slide) as pyr,
        pytest.raises(WSIError, match=r"non-square pixels: MPP-X 0.25, MPP-Y 0.5"),
    ):
        make_tile_grid(pyr, min_tissue=0.0)
    with pytest.raises(WSIError, match="Resample the slide to square pixels"):
        tissue_grid(slide)
    assert main(["tiles", str(slide), "--out", str(tmp_path / "o")]) == 1
    assert not (tmp_path / "o").exists()
    near = _aniso_slide(tmp_path / "near.ome.tif", cmu_svs, 0.5, 0.505)
    with open_pyramid(near) as pyr:
        grid = make_tile_grid(pyr, min_tissue=0.0)
    side_um = np.array([grid.size_level0 * 0.505, grid.size_level0 * 0.5])  # (y, x)
    np.testing.assert_allclose(side_um, 112.0, rtol=0.006)


def test_a_level_of_downsample_4_004_serves_tiles_at_4_and_coords_stay_on_the_level0_grid(
    cmu_svs: Path, tmp_path: Path
) -> None:
    """A 2002 px level 0 over a 500 px level 1 (downsample 4.004 / 2002 / 500; Aperio writes 4.000112): tiles of
    224 px at 2 um/px on a 0.5 um/px slide are 896 level-0 px, downsample 4. They were read from level 0 (16 times
    the pixels) because 4.004 > 4 exactly; now from level 1, as they are, at the same level-0 corners."""
    import tifffile
    from skimage.transform import resize

    with openslide.OpenSlide(str(cmu_svs)) as s:
        level0 = np.asarray(s.read_region((100, 400), 0, (2002, 2002)).convert("RGB"))  # any content
    level1 = (resize(level0, (500, 500), order=1, anti_aliasing=True) * 255).round().astype(np.uint8)
    path = tmp_path / "ds4.ome.tif"
    kw = {"tile": (128, 128), "compression": "zlib", "photometric": "rgb"}
    with tifffile.TiffWriter(path, ome=True) as tw:
        tw.write(level0, subifds=1, metadata={"PhysicalSizeX": 0.5, "PhysicalSizeY": 0.5}, **kw)
        tw.write(level1, subfiletype=1, metadata=None, **kw)
    with open_pyramid(path) as pyr:
        assert pyr.levels[1].downsample == pytest.approx(4.004)
        grid = make_tile_grid(pyr, tile_px=224, mpp=2.0, min_tissue=0.0)
        assert grid.size_level0 == 896.0 and grid.level == 1  # was 0
        np.testing.assert_array_equal(grid.coords, [[0, 0], [896, 0], [0, 896], [896, 896]])
        tiles = read_tiles(pyr, grid, range(4))
    for (x, y), tile in zip(grid.coords, tiles, strict=True):  # level 1's pixels at the tile's level-0 corner
        r, c = round(y / 4.004), round(x / 4.004)
        np.testing.assert_array_equal(tile, level1[r : r + 224, c : c + 224])
