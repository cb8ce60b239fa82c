"""Tissue detection and tile grids on real tiles and slides, checked against direct computations."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import openslide
import pytest
from PIL import Image

from napari_pathdistill.wsi import (
    TissueMask,
    detect_tissue,
    grid_to_image,
    grid_to_shapes,
    make_tile_grid,
    open_pyramid,
    read_tiles,
    tissue_mask_from_rgb,
)


def _tile(histolab_tiles: Path, name: str) -> np.ndarray:
    return np.asarray(Image.open(histolab_tiles / name))


@pytest.mark.parametrize("name", ["no-tissue.png", "no-tissue2.png", "no-tissue-line.png", "almost-white-1.png"])
def test_blank_tiles_have_almost_no_tissue(histolab_tiles: Path, name: str) -> None:
    """Glass, a grey cover-slip region with its black edge line, almost-white glass: < 5 % tissue."""
    assert tissue_mask_from_rgb(_tile(histolab_tiles, name)).mean() < 0.05


def test_almost_white_tile_marks_only_its_corner_of_tissue(histolab_tiles: Path) -> None:
    """almost-white-2.png is glass with a piece of pink tissue in its top-right corner: only that is tissue."""
    rgb = _tile(histolab_tiles, "almost-white-2.png")[..., :3]
    mask = tissue_mask_from_rgb(rgb)
    assert 0.02 < mask.mean() < 0.08
    assert mask[:128, 256:].sum() > 0.9 * mask.sum()  # the corner holds the tissue ...
    corner = mask[:128, 256:]
    grey = rgb[:128, 256:].mean(axis=2)
    assert grey[corner].mean() < grey[~corner].mean() - 15  # ... and the marked part is the darker, stained one


def test_tissue_tiles_are_tissue(histolab_tiles: Path) -> None:
    names = sorted(p.name for p in histolab_tiles.glob("tissue-*.png"))
    assert len(names) == 6
    for name in names:
        assert tissue_mask_from_rgb(_tile(histolab_tiles, name)).mean() > 0.45, name


def test_mask_separates_dark_stained_from_glass(cmu_svs: Path) -> None:
    with open_pyramid(cmu_svs) as pyr:
        tm = detect_tissue(pyr, max_size=512)
        thumb, ds = pyr.thumbnail(512)
    assert tm.mask.shape == thumb.shape[:2] and tm.downsample == pytest.approx(ds)
    assert max(thumb.shape[:2]) == 512 and ds == pytest.approx(2967 / 512, rel=0.01)
    assert 0.2 < tm.mask.mean() < 0.6
    grey = thumb.mean(axis=2)
    assert grey[tm.mask].mean() < grey[~tm.mask].mean() - 30  # tissue is darker than glass
    assert np.percentile(grey[~tm.mask], 50) > 220


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
    # centre of the cell in layer units (um) == centre of tile k's level-0 pixels times slide MPP
    x, y = grid.coords[k]
    centre_um = (np.array([y, x]) + (grid.size_level0 - 1) / 2) * 0.499
    np.testing.assert_allclose(np.array([r, c]) * scale + translate, centre_um, atol=0.499)
    nan_img, _, _ = grid_to_image(grid, values.astype(float)[:, None].repeat(2, 1), fill=np.nan)
    assert nan_img.shape == (*grid.grid_shape, 2) and np.isnan(nan_img).sum() == 2 * (img.size - len(grid))
    rects = grid_to_shapes(grid)
    assert rects.shape == (len(grid), 4, 2)
    np.testing.assert_allclose(rects[k].mean(axis=0), centre_um, atol=0.499)


def test_empty_mask_gives_empty_grid(cmu_svs: Path) -> None:
    with open_pyramid(cmu_svs) as pyr:
        grid = make_tile_grid(pyr, mask=TissueMask(np.zeros((64, 48), bool), 2967 / 64))
    assert len(grid) == 0 and grid.coords.shape == (0, 2)


def _otsu_saturation_mask(rgb: np.ndarray) -> np.ndarray:
    """The previous detector (Otsu on HSV saturation floored at 0.07, mean OD >= 0.05, closing, fill): a
    reference for H&E, where it was right."""
    from scipy import ndimage as ndi
    from skimage import morphology
    from skimage.filters import threshold_otsu

    f = rgb[..., :3].astype(np.float32)
    vmax, vmin = f.max(axis=2), f.min(axis=2)
    sat = np.where(vmax > 0, (vmax - vmin) / np.maximum(vmax, 1.0), 0.0)
    od = -np.log10(np.clip(f, 1.0, 255.0) / 255.0).mean(axis=2)
    mask = (sat >= max(float(threshold_otsu(sat)), 0.07)) & (od >= 0.05)
    mask = morphology.closing(mask, morphology.disk(2)).astype(bool)
    small = int(1e-3 * mask.size)
    return ndi.binary_fill_holes(morphology.remove_small_objects(mask, max_size=small))


def test_he_mask_agrees_with_the_otsu_saturation_mask_and_marks_no_glass(cmu_svs: Path) -> None:
    """CMU-1-Small-Region (H&E): the optical-density mask covers what the Otsu-saturation mask found, and what
    it adds is a thin rim along the tissue border, not glass away from it."""
    from scipy import ndimage as ndi

    with open_pyramid(cmu_svs) as pyr:
        tm = detect_tissue(pyr, max_size=1024)
        thumb, _ = pyr.thumbnail(1024)
    old = _otsu_saturation_mask(thumb)
    new = tm.mask
    assert (new & old).sum() / old.sum() > 0.95  # keeps the tissue
    assert (new & old).sum() / (new | old).sum() > 0.85
    far_from_tissue = ~ndi.binary_dilation(old, iterations=12)  # > 12 px (~35 um) from the old mask: glass
    assert new[far_from_tissue].mean() < 0.005
    grey = thumb[..., :3].mean(axis=2)
    assert np.percentile(grey[~new], 50) > 225  # what is left out is bright glass


@pytest.mark.parametrize("which", [0, 1])
def test_pale_ihc_os2_is_tissue_with_the_default_settings(os2_pair, which: int) -> None:
    """OS-2 Ki67 (pale blue counterstain, brown nuclei) at 0.23 / 0.35 um/px: most of the field is tissue (the
    lumens are glass); the previous saturation mask kept 2-9 %. Tiles at the default min tissue 0.5 survive."""
    with open_pyramid(os2_pair[which]) as pyr:
        tm = detect_tissue(pyr)
        thumb, _ = pyr.thumbnail(2048)
        grid = make_tile_grid(pyr, tile_px=224, mpp=0.5, mask=tm)
        full = make_tile_grid(pyr, tile_px=224, mpp=0.5, min_tissue=0.0)
    assert 0.6 < tm.mask.mean() < 0.95
    grey = thumb[..., :3].mean(axis=2)
    assert grey[tm.mask].mean() < grey[~tm.mask].mean() - 8  # tissue is darker than the lumens' glass
    assert tm.mask[grey < 80].mean() > 0.99  # near-black DAB nuclei (little colour) are tissue too
    assert len(grid) > 0.5 * len(full)
