"""inference.feature_match: a feature file checked against the slide it is shown on (real CMU embedding)."""

from __future__ import annotations

from pathlib import Path

import pytest

from _shared_data import SHARED_DATA
from napari_pathdistill.inference.embed import embed_slide
from napari_pathdistill.inference.feature_files import read_feature_file
from napari_pathdistill.inference.feature_match import slide_mismatch, trident_magnification
from napari_pathdistill.wsi.pyramid import open_pyramid

SLIDE = SHARED_DATA / "wsi" / "CMU-1-Small-Region.svs"


@pytest.fixture(scope="module")
def ours(tmp_path_factory, tiny_vit_2um) -> Path:
    return embed_slide(SLIDE, tiny_vit_2um, tmp_path_factory.mktemp("feats"), num_workers=0)


def test_our_file_fits_its_slide_and_not_a_scan_at_another_um_px(ours):
    ff = read_feature_file(ours)
    with open_pyramid(SLIDE) as pyr:
        size, mpp = pyr.dimensions, pyr.mpp[1]
    assert slide_mismatch(ff, SLIDE.name, size, mpp) is None
    assert slide_mismatch(ff, SLIDE.name, size, None) is None  # a slide without MPP: nothing to compare
    said = slide_mismatch(
        ff, "x40.svs", (2 * size[0], 2 * size[1]), mpp / 2
    )  # the same tissue scanned at 40x
    assert said == (
        f"{ours.name} does not match x40.svs (4440 x 5934 level-0 px, 0.2495 um/px): its tiles were cut from a "
        "slide of 0.499 um/px. It is of another slide, or of another scan of this one: its map is shown but does "
        "not lie on this slide's tissue. Open the slide it was made from."
    )
    half = slide_mismatch(ff, "small.svs", (size[0] // 2, size[1] // 2), mpp)
    assert half is not None and "tiles lie past the slide's edge" in half


@pytest.mark.parametrize(
    ("mpp", "mag"),
    [(0.12, 80), (0.17, 60), (0.25, 40), (0.2495, 40), (0.3, 20), (0.499, 20), (1.0, 10), (2.0, 5)],
)
def test_trident_magnification_follows_tridents_thresholds(mpp, mag):
    """trident/wsi_objects/WSI._fetch_magnification: < 0.16 -> 80, < 0.2 -> 60, < 0.3 -> 40, < 0.6 -> 20, ..."""
    assert trident_magnification(mpp) == mag
