"""Planar (separate-plane, PlanarConfiguration 2) RGB TIFFs open, tiled or in strips, with the pixels tifffile
reads; before they were refused with "unsupported TIFF layout (3, 600, 500) (axes SYX)"."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile

from napari_pathdistill._reader import read_slide


def _rgb(h: int, w: int) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    return np.stack([(xx * 7 + yy * 3) % 251, (yy * 5) % 253, (xx * 11) % 241], -1).astype(np.uint8)


@pytest.mark.parametrize("layout", ["tiles", "strips"])
def test_planar_rgb_pyramid_reads_like_tifffile(tmp_path: Path, layout: str) -> None:
    img = _rgb(600, 501)
    levels = [img, np.ascontiguousarray(img[::2, ::2])]
    chunk = {"tile": (128, 96)} if layout == "tiles" else {"rowsperstrip": 37}
    kw = {"planarconfig": "separate", "photometric": "rgb", "compression": "zlib", "metadata": None, **chunk}
    path = tmp_path / "planar.tif"
    with tifffile.TiffWriter(path) as tw:
        res = {"resolution": (2e4, 2e4), "resolutionunit": "CENTIMETER"}
        tw.write(np.moveaxis(levels[0], -1, 0), subifds=1, **res, **kw)
        tw.write(np.moveaxis(levels[1], -1, 0), subfiletype=1, **kw)
    with tifffile.TiffFile(path) as tif:
        assert tif.pages[0].planarconfig == 2 and tif.pages[0].axes == "SYX"
        direct = np.moveaxis(tif.pages[0].asarray(), 0, -1)
    [(data, kwargs, _)] = read_slide(str(path))
    assert [d.shape for d in data] == [(600, 501, 3), (300, 251, 3)]
    assert kwargs["scale"] == pytest.approx((0.5, 0.5))
    np.testing.assert_array_equal(np.asarray(data[0]), direct)
    for got, want in zip(data, levels, strict=True):
        np.testing.assert_array_equal(np.asarray(got), want)  # partial last tiles/strips included
    np.testing.assert_array_equal(np.asarray(data[0][590:, 450:]), img[590:, 450:])
