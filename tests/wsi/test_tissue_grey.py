"""Tissue detection on a greyscale slide (one sample per pixel, shown as grey RGB): its tissue has no colour, and
the filter that drops colourless objects (a black cover-slip line on a colour scan) dropped all of it: 0 % tissue
on a grey copy of CMU-1-Small-Region and of a 40k benchmark slide, whatever the threshold."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tifffile

from napari_pathdistill.wsi import open_pyramid
from napari_pathdistill.wsi.tissue import detect_tissue, tissue_mask_from_rgb


def test_a_greyscale_slide_has_the_tissue_of_its_colour_original(
    tmp_path: Path, cmu_svs: Path, cmu_rgb: np.ndarray
) -> None:
    grey = np.round(cmu_rgb[..., :3].mean(axis=2)).astype(np.uint8)
    path = tmp_path / "cmu_grey.tif"
    tifffile.imwrite(path, grey, tile=(256, 256), photometric="minisblack", compression="zlib",
                     resolution=(1e4 / 0.499, 1e4 / 0.499), resolutionunit="CENTIMETER")  # fmt: skip
    with open_pyramid(cmu_svs) as pyr:
        colour = detect_tissue(pyr)
    with open_pyramid(path) as pyr:
        thumb, _ = pyr.thumbnail(2048)
        assert (thumb[..., 0] == thumb[..., 2]).all()  # shown as grey RGB
        got = detect_tissue(pyr)
    assert got.mask.shape == colour.mask.shape
    assert colour.mask.mean() > 0.2 and abs(got.mask.mean() - colour.mask.mean()) < 0.03  # before: 0.0
    assert (got.mask == colour.mask).mean() > 0.95


def test_grey_glass_with_a_black_line_on_a_colour_scan_is_still_no_tissue() -> None:
    """What the colour filter is for keeps working on colour images: tinted glass with a black line."""
    rng = np.random.default_rng(0)
    rgb = np.clip(np.array([236, 234, 240]) + rng.normal(0, 2, (512, 512, 3)), 0, 255).astype(np.uint8)
    rgb[250:262] = rng.integers(20, 40, (12, 512, 1))  # a black cover-slip edge, no colour
    assert tissue_mask_from_rgb(rgb).mean() < 0.01
