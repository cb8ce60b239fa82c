"""A plain JPEG/PNG up to the plain-image backend's own limit (``MAX_PIXELS``, 20,000 x 20,000) opens without
Pillow's decompression-bomb guard, which is meant for untrusted web uploads: a 15,000 x 15,000 JPEG (225 M px,
over Pillow's 179 M) was refused as 'could not be decoded as an image (... could be decompression bomb DOS
attack.)', and one of 10,000 x 10,000 opened with a ``DecompressionBombWarning`` (a notification in napari).

The real sizes take 0.3-0.7 GB to decode, so the tests scale Pillow's limit down (its documented setting,
``Image.MAX_IMAGE_PIXELS``) and open a real 512 x 512 IHC image under it.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from napari_pathdistill.errors import WSIError
from napari_pathdistill.wsi import _image_backend, open_pyramid


@pytest.fixture
def ihc(shared_data: Path) -> Path:
    return shared_data / "misc" / "skimage" / "ihc.png"


@pytest.mark.parametrize("pil_limit", [100_000, 200_000])  # 262,144 px: over 2x Pillow's limit, then over 1x
def test_an_image_within_our_limit_opens_whatever_pillows_bomb_limit(
    ihc: Path, monkeypatch: pytest.MonkeyPatch, pil_limit: int
) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", pil_limit)
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with open_pyramid(ihc) as pyr:
            rgb = pyr.read_region((0, 0), 0, (512, 512))
    assert pil_limit == Image.MAX_IMAGE_PIXELS  # the guard is left as the caller set it
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)
    with Image.open(ihc) as im:  # Pillow's own pixels
        np.testing.assert_array_equal(rgb, np.asarray(im.convert("RGB")))


def test_pillows_limit_is_restored_and_ours_still_refuses(ihc: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100_000)
    monkeypatch.setattr(_image_backend, "MAX_PIXELS", 500 * 500)
    with pytest.raises(WSIError, match=r"ihc\.png is a 512 x 512 plain image: too large to decode whole"):
        open_pyramid(ihc)
    assert Image.MAX_IMAGE_PIXELS == 100_000
    with pytest.raises(Image.DecompressionBombError):  # other Pillow users keep their guard
        Image.open(ihc)
