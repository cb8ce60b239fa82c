"""Overlapping tiles over a region, Hann blending (partition of unity), region-wide rank normalisation, and no
seams on a real slide with the real EfficientNet-Lite2 teacher (tile borders are no steeper than tile insides)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_pathdistill.inference.attention_pairs import iter_attention_pair
from napari_pathdistill.inference.attention_region import Blender, hann_window, normalise_region, region_grid
from napari_pathdistill.models import load_model
from napari_pathdistill.progress import drain
from napari_pathdistill.wsi.pyramid import open_pyramid
from napari_pathdistill.wsi.tiling import detect_tissue


def test_region_grid_overlaps_tiles_in_the_box_and_places_them_on_the_canvas(cmu_svs):
    with open_pyramid(cmu_svs) as pyr:
        bbox = (500.0, 800.0, 1500.0, 1600.0)
        region = region_grid(
            pyr, detect_tissue(pyr), bbox=bbox, tile_px=224, mpp=0.5, overlap=0.5, min_tissue=0.3
        )
        capped = region_grid(pyr, None, bbox=bbox, tile_px=224, mpp=0.5, min_tissue=0, max_tiles=4)
        uncapped = region_grid(pyr, None, bbox=bbox, tile_px=224, mpp=0.5, min_tissue=0)
    size = region.tiles.size_level0
    assert size == pytest.approx(224 * 0.5 / 0.499)
    centres = region.tiles.coords + size / 2
    assert len(region) > 10
    assert (centres[:, 0] >= 500).all() and (centres[:, 0] <= 1500).all()
    assert (centres[:, 1] >= 800).all() and (centres[:, 1] <= 1600).all()
    steps = np.diff(np.unique(region.tiles.coords[:, 0]))
    assert steps.min() == pytest.approx(size / 2, abs=1)  # 50 % overlap: stride = half a tile
    assert region.cells == 16 and region.stride_cells == 8
    # canvas offsets are the level-0 positions in map pixels
    rel = (region.tiles.coords - region.origin) / region.cell_px
    np.testing.assert_allclose(rel[:, ::-1], region.offsets, atol=0.51)
    assert region.shape == tuple(region.offsets.max(0) + 16)
    # max_tiles keeps the tiles nearest the box centre
    mid = np.array([1000.0, 1200.0])
    assert len(capped) == 4
    assert capped.candidates == uncapped.candidates == len(uncapped) > 4 and region.candidates == len(region)
    assert np.linalg.norm(capped.tiles.coords + size / 2 - mid, axis=1).max() <= size


def test_hann_blending_is_a_weighted_mean_and_constant_maps_stay_constant(cmu_svs):
    with open_pyramid(cmu_svs) as pyr:
        region = region_grid(pyr, None, bbox=None, tile_px=224, mpp=0.5, min_tissue=0, max_tiles=30)
    w = hann_window(16) - 1e-3  # without its floor, the window is separable sin^2
    row = np.sqrt(np.diag(w))  # sin^2((i + 0.5) pi / 16)
    np.testing.assert_allclose(w, np.outer(row, row), atol=1e-6)
    np.testing.assert_allclose(row[:8] + row[8:], 1.0, atol=1e-6)  # 50 % overlap: partition of unity
    blend = Blender(region, ("a", "b"))
    rng = np.random.default_rng(0)
    for first in range(0, len(region), 7):
        n = min(7, len(region) - first)
        blend.add(
            first, {"a": np.full((n, 16, 16), 0.25, np.float32), "b": rng.random((n, 16, 16), np.float32)}
        )
    a, b = blend.result("a"), blend.result("b")
    assert np.isfinite(a).any() and np.isnan(a).sum() == np.isnan(b).sum()
    np.testing.assert_allclose(a[np.isfinite(a)], 0.25, rtol=1e-5)
    assert np.nanmin(b) >= 0 and np.nanmax(b) <= 1  # a weighted mean stays within the inputs' range


def test_rank_normalisation_is_one_map_wide_and_keeps_nan():
    img = np.arange(100, dtype=np.float32).reshape(10, 10) ** 3  # peaky: min-max would leave most of it black
    img[0, 0] = np.nan
    ranks, lo, hi = normalise_region(img)
    assert ranks.dtype == np.float16 and np.isnan(ranks[0, 0])
    finite = ranks[np.isfinite(ranks)].astype(np.float64)
    assert finite.min() == 0 and finite.max() == 1
    np.testing.assert_allclose(np.median(finite), 0.5, atol=0.02)  # uniform ranks whatever the units
    assert (np.diff(finite) >= 0).all()  # monotone
    assert lo < hi


def test_tied_pixels_get_the_middle_rank_of_their_tie():
    """Tied pixels got the top rank of their tie (np.interp over repeated quantiles): a map 70 % zero (Grad-CAM's
    ReLU over a region it finds nothing in) drew its zeros at rank 0.7, tinted as more attended than 70 % of the
    region, and a flat map (a collapsed student's uniform attention) drew every pixel at rank 1: all yellow, "top
    10 %". A tie now gets the middle of its ranks: below the median stays transparent; untied maps are unchanged."""
    img = np.zeros((10, 10), np.float32)
    img[:3] = np.arange(1, 31, dtype=np.float32).reshape(3, 10)  # 30 % of the pixels attended, 70 % zero
    ranks = normalise_region(img)[0].astype(np.float64)
    np.testing.assert_allclose(ranks[3:], 0.35, atol=0.005)  # the middle of ranks 0 .. 0.7
    assert ranks[:3].min() > 0.7 and ranks.max() == 1
    flat = normalise_region(np.full((8, 8), 0.0049, np.float32))[0].astype(np.float64)
    np.testing.assert_allclose(flat, 0.5, atol=0.001)  # at the colormap's transparent median, not yellow
    plain = np.arange(100, dtype=np.float32).reshape(10, 10) ** 3  # no ties: the ranks of before
    q = np.percentile(plain, np.linspace(0, 100, 1001))
    want = np.interp(plain, q, np.linspace(0, 1, 1001)).astype(np.float16)
    np.testing.assert_array_equal(normalise_region(plain)[0], want)


def _border_ratio(m: np.ndarray, stride: int) -> float:
    """Mean |gradient| across tile borders (columns/rows at multiples of ``stride``) over the mean inside tiles."""
    border, inside = [], []
    for a in (m.astype(np.float64), m.T.astype(np.float64)):
        d = np.abs(np.diff(a, axis=1))
        at = (np.arange(d.shape[1]) + 1) % stride == 0
        border.append(d[:, at][np.isfinite(d[:, at])])
        inside.append(d[:, ~at][np.isfinite(d[:, ~at])])
    return float(np.concatenate(border).mean() / np.concatenate(inside).mean())


def test_no_seams_on_a_real_slide_with_the_real_teacher(cmu_svs):
    torch.set_num_threads(2)
    teacher = load_model("efficientnet-lite2-imagenet", device="cpu")
    student = load_model("pathdistill-student", device="cpu")
    bbox = (700.0, 1000.0, 1150.0, 1450.0)
    blended = drain(iter_attention_pair(teacher, student, cmu_svs, bbox=bbox, overlap=0.5, min_tissue=0.3))
    plain = drain(iter_attention_pair(teacher, student, cmu_svs, bbox=bbox, overlap=0.0, min_tissue=0.3))
    assert len(blended.coords) >= 9
    # overlapping tiles with the Hann window: borders no steeper than the inside of tiles
    assert _border_ratio(blended.teacher_map, 8) <= 1.0
    # the same maps without overlap show their tile borders (what the check detects)
    assert _border_ratio(plain.teacher_map, 16) > 1.5


def test_a_view_zoomed_in_within_one_tile_gets_the_tile_under_it(cmu_svs):
    """Zoomed in on tissue until the view (40 x 48 level-0 px at zoom 40) held no tile centre, 'tiles in current
    view' found no tile and failed with 'No tissue tile in the chosen region: pan/zoom onto tissue'. A box
    narrower than the stride is widened about its middle to one stride: the tile nearest the view."""
    with open_pyramid(cmu_svs) as pyr:
        mask = detect_tissue(pyr)
        bbox = (1080.0, 1376.0, 1120.0, 1424.0)
        region = region_grid(pyr, mask, bbox=bbox, tile_px=224, mpp=0.5, overlap=0.5)
    size, stride = region.tiles.size_level0, region.tiles.size_level0 / 2
    assert 1 <= len(region) <= 4
    centres = region.tiles.coords + size / 2
    assert (np.abs(centres - [1100.0, 1400.0]) <= stride / 2 + 1).all(), centres
    for x0, y0 in region.tiles.coords:  # each tile covers the whole view
        assert x0 <= bbox[0] and y0 <= bbox[1] and x0 + size >= bbox[2] and y0 + size >= bbox[3]
