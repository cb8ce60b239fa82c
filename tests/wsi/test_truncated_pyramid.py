"""A pyramid cut short in its reduced levels (level 0 intact) opens with the intact levels and one warning
naming what was lost; an intact file opens without one. The header/first-IFD cuts of test_bad_inputs.py
still fail clearly."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import tifffile

from _wsi_files import write_pyramid_tiff
from napari_pathdistill.errors import TruncatedFileWarning, WSIError
from napari_pathdistill.wsi import open_pyramid


@pytest.fixture(scope="module")
def pyramid(tmp_path_factory) -> tuple[Path, list[np.ndarray], list[int]]:
    """A 1024 px OME pyramid of 4 levels in SubIFDs; (path, level arrays, file offset of each level's IFD)."""
    path = tmp_path_factory.mktemp("pyr") / "full.ome.tif"
    img = np.random.default_rng(0).integers(0, 255, (1024, 1024, 3), dtype=np.uint8)
    levels = write_pyramid_tiff(path, img, levels=4, ome=True)
    with tifffile.TiffFile(path) as tif:
        offsets = [lv.keyframe.offset for lv in tif.series[0].levels]
    assert len(offsets) == 4 and offsets == sorted(offsets)
    return path, levels, offsets


def _cut(src: Path, dst: Path, at: int) -> Path:
    dst.write_bytes(src.read_bytes()[:at])
    return dst


def _open_warned(path: Path):
    with warnings.catch_warnings(record=True) as got:
        warnings.simplefilter("always")
        pyr = open_pyramid(path)
    return pyr, [str(w.message) for w in got if issubclass(w.category, TruncatedFileWarning)]


def test_intact_pyramid_opens_without_a_warning(pyramid) -> None:
    pyr, warned = _open_warned(pyramid[0])
    with pyr:
        assert len(pyr.levels) == 4 and warned == []


@pytest.mark.parametrize(("ifd", "found"), [(3, 3), (2, 2)])
def test_cut_inside_a_subifd_opens_the_intact_levels_with_a_warning(
    pyramid, tmp_path: Path, ifd: int, found: int
) -> None:
    src, levels, offsets = pyramid
    path = _cut(src, tmp_path / "cut.ome.tif", offsets[ifd] + 30)  # inside the directory of level `ifd`
    pyr, warned = _open_warned(path)
    with pyr:
        assert len(pyr.levels) == found and len(warned) == 1
        assert warned[0].startswith(f"cut.ome.tif is truncated (the file ends at byte {offsets[ifd] + 30:,}): lost "
                                    f"{4 - found} of its 4 pyramid levels")  # fmt: skip
        assert f"Opened with the {found} intact level(s)" in warned[0] and "copy the file again" in warned[0]
        for i in range(found):  # every level left reads exactly
            h, w = levels[i].shape[:2]
            np.testing.assert_array_equal(pyr.to_dask()[i].compute(), levels[i])
            assert pyr.levels[i].shape == (h, w)


def test_cut_inside_the_last_levels_tiles_drops_that_level(pyramid, tmp_path: Path) -> None:
    src, levels, offsets = pyramid
    path = _cut(src, tmp_path / "cut.ome.tif", offsets[3] + 2000)  # level 3's directory whole, its tiles cut
    pyr, warned = _open_warned(path)
    with pyr:
        assert len(pyr.levels) == 3 and len(warned) == 1
        assert "lost 1 level(s) whose tile data is cut off" in warned[0]
        np.testing.assert_array_equal(pyr.to_dask()[2].compute(), levels[2])


def test_header_cuts_still_fail_clearly(pyramid, tmp_path: Path) -> None:
    for n in (8, 100):
        with pytest.raises(WSIError, match="truncated or corrupt"):
            open_pyramid(_cut(pyramid[0], tmp_path / f"cut{n}.ome.tif", n))


@pytest.fixture(scope="module")
def top_level_pyramid(tmp_path_factory) -> tuple[Path, list[int]]:
    """A 1024 px tiled TIFF pyramid of 3 levels in top-level IFDs (no SubIFDs); (path, IFD offsets)."""
    path = tmp_path_factory.mktemp("top") / "top.tif"
    img = np.random.default_rng(1).integers(0, 255, (1024, 1024, 3), dtype=np.uint8)
    kw = {"tile": (128, 128), "compression": "zlib", "photometric": "rgb"}
    with tifffile.TiffWriter(path) as tw:
        tw.write(img, resolution=(2e4, 2e4), resolutionunit="CENTIMETER", **kw)
        for k in (2, 4):
            tw.write(img[::k, ::k].copy(), subfiletype=1, **kw)
    with tifffile.TiffFile(path) as tif:
        assert len(tif.series) == 1 and len(tif.series[0].levels) == 3
        return path, [p.offset for p in tif.pages]


def test_top_level_chain_cut_before_its_last_ifd_warns(top_level_pyramid, tmp_path: Path) -> None:
    src, offsets = top_level_pyramid
    path = _cut(src, tmp_path / "top.tif", offsets[2])  # the last directory is gone, its pointer dangles
    pyr, warned = _open_warned(path)
    with pyr:
        assert len(pyr.levels) == 2 and len(warned) == 1
        assert (
            f"lost the levels after level 1 (the next image directory, at byte {offsets[2]:,})" in warned[0]
        )


def test_top_level_chain_cut_inside_its_last_ifd_fails_clearly(top_level_pyramid, tmp_path: Path) -> None:
    src, offsets = top_level_pyramid
    path = _cut(src, tmp_path / "top.tif", offsets[2] + 30)
    with pytest.raises(
        WSIError, match=r"top\.tif: its image directories cannot be read .* truncated or corrupt"
    ):
        open_pyramid(path)
