"""Teacher vs student attention maps on a slide whose pixels are not quite square (within tiling's 2 %)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from napari_pathdistill.inference.attention_pairs import iter_attention_pair
from napari_pathdistill.models.testing import tiny_model
from napari_pathdistill.progress import drain

MPP_X, MPP_Y = 0.5, 0.51  # 2 %: the most wsi.tiling accepts


def _anisotropic_cmu(path: Path, cmu_svs: Path) -> Path:
    import openslide
    import tifffile

    with openslide.OpenSlide(str(cmu_svs)) as s:
        rgb = np.asarray(s.read_region((0, 0), 0, s.dimensions).convert("RGB"))
    tifffile.imwrite(path, rgb, tile=(256, 256), photometric="rgb", compression="zlib",
                     metadata={"PhysicalSizeX": MPP_X, "PhysicalSizeY": MPP_Y})  # fmt: skip
    return path


def test_maps_lie_on_their_tiles_on_both_axes(cmu_svs, tmp_path):
    """The maps were placed with MPP-X on both axes, on a layer whose y axis is in MPP-Y: 2 % too short and
    2 % too high up (a region 2,500 px down the CMU slide: 25 um; 20 mm down a large slide: 400 um). Their canvas
    now spans its tiles' level-0 extent times (MPP-Y, MPP-X), the slide layer's scale."""
    slide = _anisotropic_cmu(tmp_path / "aniso.ome.tif", cmu_svs)
    vit = tiny_model(tile_px=56)
    bbox = (600.0, 2300.0, 1600.0, 2900.0)  # x0, y0, x1, y1 level-0 px: low on the slide
    pair = drain(iter_attention_pair(vit, vit, slide, bbox=bbox, max_tiles=6, overlap=0.0, min_tissue=0.0))
    rows, cols = pair.teacher_map.shape
    scale, translate = np.asarray(pair.scale), np.asarray(pair.translate)
    top_left = translate - scale / 2  # the canvas's edges in world units (napari: pixel centres)
    bottom_right = translate + (np.array([rows, cols]) - 0.5) * scale
    unit = np.array([MPP_Y, MPP_X])
    lo = (pair.coords.min(0)[::-1] - 0.5) * unit  # (y, x) of the tiles' level-0 edges, in the layer's um
    hi = (pair.coords.max(0)[::-1] + pair.tile_px_level0 - 0.5) * unit
    assert lo[0] > 2000 * MPP_Y
    np.testing.assert_allclose(top_left, lo, atol=0.5 * MPP_Y)
    np.testing.assert_allclose(bottom_right, hi, atol=0.5 * MPP_Y)


def test_a_slide_of_2_to_1_pixels_is_refused_before_any_work(cmu_svs, tmp_path):
    """MPP-X 0.25, MPP-Y 0.5: the maps were computed on tiles cut square in level-0 px at the mean um/px, 19 um
    wide and 37 um high for the student's 28 um (the tissue squashed 2:1 under both models), without a word; the
    Tissue, Embed and Similarity runs refuse such a slide. Attention now does too, before tissue detection."""
    import tifffile

    from napari_pathdistill.errors import WSIError

    rgb = tifffile.imread(_anisotropic_cmu(tmp_path / "near.ome.tif", cmu_svs))
    slide = tmp_path / "squashed.ome.tif"
    tifffile.imwrite(slide, rgb, tile=(256, 256), photometric="rgb", compression="zlib",
                     metadata={"PhysicalSizeX": 0.25, "PhysicalSizeY": 0.5})  # fmt: skip
    vit = tiny_model(tile_px=56)
    steps = iter_attention_pair(vit, vit, slide, max_tiles=4, overlap=0.0)
    with pytest.raises(WSIError, match=r"non-square pixels: MPP-X 0.25, MPP-Y 0.5"):
        next(steps)  # the first step: no "finding tissue" before the refusal
