"""TIFF photometric interpretation and extra samples in the tifffile backend: premultiplied (associated) and
unspecified alpha as OpenSlide (libtiff) reads them, MinIsWhite inverted, and multi-channel greyscale or palette
pages refused instead of shown as wrong colours."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile

from napari_pathdistill.errors import WSIError
from napari_pathdistill.wsi import open_pyramid

KW = {"tile": (64, 64), "metadata": None}


def _write(path: Path, image: np.ndarray, levels: int = 2, **kw) -> Path:
    """``image`` as a pyramid of ``levels`` (SubIFDs; 2 or more: the tifffile backend reads it)."""
    with tifffile.TiffWriter(path) as tw:
        tw.write(image, subifds=levels - 1 or None, **KW, **kw)
        for k in range(1, levels):
            tw.write(np.ascontiguousarray(image[:: 2**k, :: 2**k]), subfiletype=1, **KW, **kw)
    return path


@pytest.mark.parametrize(
    ("kind", "want"),
    [
        ("assocalpha", (100 + 127, 50 + 127, 25 + 127)),  # premultiplied: c + 255 (1 - a)
        ("unassalpha", (177, 152, 140)),  # c a + 255 (1 - a), rounded
        ("unspecified", (100 + 127, 50 + 127, 25 + 127)),  # libtiff: associated
    ],
)
def test_alpha_kinds_read_as_openslide_reads_them(
    tmp_path: Path, kind: str, want: tuple[int, int, int]
) -> None:
    rgba = np.zeros((256, 192, 4), np.uint8)
    rgba[:] = (100, 50, 25, 128)
    rgba[:, 100:, 3] = 255  # opaque: the colour as stored
    got = {}
    for levels in (2, 1):  # a pyramid (tifffile) and a single level (OpenSlide, libtiff's RGBA reading)
        path = _write(tmp_path / f"{kind}{levels}.tif", rgba, levels, photometric="rgb", extrasamples=[kind])
        with open_pyramid(path) as pyr:
            got[pyr.backend] = pyr.read_region((0, 0), 0, (192, 256))
    assert set(got) == {"tifffile", "openslide"}
    for backend, img in got.items():
        assert tuple(img[0, 0]) == want, backend
        assert tuple(img[0, 150]) == (100, 50, 25), backend
    np.testing.assert_array_equal(got["tifffile"], got["openslide"])


def test_min_is_white_is_inverted(tmp_path: Path) -> None:
    grey = np.tile(np.arange(256, dtype=np.uint8), (128, 1))
    path = _write(tmp_path / "white.tif", grey, photometric="miniswhite")
    with open_pyramid(path) as pyr:
        assert pyr.backend == "tifffile"
        img = pyr.read_region((0, 0), 0, (256, 128))
    np.testing.assert_array_equal(img, np.repeat((255 - grey)[..., None], 3, axis=2))


def test_multi_channel_greyscale_page_and_palette_are_refused(tmp_path: Path) -> None:
    channels = np.random.default_rng(0).integers(0, 4000, (256, 256, 5), dtype=np.uint16)
    path = _write(tmp_path / "if5.tif", channels, photometric="minisblack", planarconfig="contig")
    with pytest.raises(WSIError, match=r"if5\.tif: a greyscale TIFF page with 5 samples per pixel"):
        open_pyramid(path)
    index = np.tile(np.arange(256, dtype=np.uint8), (256, 1))
    cmap = np.random.default_rng(1).integers(0, 65535, (3, 256), dtype=np.uint16)
    path = _write(tmp_path / "pal.tif", index, photometric="palette", colormap=cmap)
    with pytest.raises(WSIError, match=r"pal\.tif: palette \(colour-map\) TIFF images are not supported"):
        open_pyramid(path)
