"""Pyramidal TIFFs whose levels are not one constant factor apart (a skipped level, downsamples 1, 3, 7.5):
tifffile's series detection leaves such levels out; the reader keeps every level, says nothing about an intact
file, and still warns when a SubIFD is cut off."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import tifffile

from napari_pathdistill._reader import read_slide
from napari_pathdistill.errors import TruncatedFileWarning
from napari_pathdistill.wsi import open_pyramid

KW = {"tile": (64, 64), "compression": "zlib", "photometric": "rgb"}


def _levels(factors: tuple[float, ...]) -> list[np.ndarray]:
    yy, xx = np.mgrid[0:600, 0:803]
    img = np.stack([(xx * 7 + yy * 3) % 251, (yy * 5) % 253, (xx * 11) % 241], -1).astype(np.uint8)
    out = []
    for f in factors:
        ys, xs = (np.arange(int(600 / f)) * f).astype(int), (np.arange(int(803 / f)) * f).astype(int)
        out.append(np.ascontiguousarray(img[ys][:, xs]))
    return out


def _write(path: Path, levels: list[np.ndarray], subifds: bool, extra: np.ndarray | None = None) -> Path:
    """A plain (non-OME) pyramid: reduced levels in SubIFDs or as top-level directories; ``extra`` is one more
    reduced image that is no level of it (another aspect)."""
    res = {"resolution": (2e4, 2e4), "resolutionunit": "CENTIMETER"}
    reduced = levels[1:] + ([extra] if extra is not None else [])
    with tifffile.TiffWriter(path) as tw:
        tw.write(levels[0], subifds=len(reduced) if subifds else None, metadata=None, **res, **KW)
        for lv in reduced:
            tw.write(lv, subfiletype=1, metadata=None, **KW)
    return path


def _open(path: Path):
    with warnings.catch_warnings(record=True) as got:
        warnings.simplefilter("always")
        layers = read_slide(str(path))
    return layers, [str(w.message) for w in got if issubclass(w.category, TruncatedFileWarning)]


@pytest.mark.parametrize("subifds", [True, False], ids=["subifds", "top-level"])
@pytest.mark.parametrize("factors", [(1, 2, 8), (1, 3, 7.5)], ids=["skipped-level", "uneven"])
def test_every_level_is_kept_and_an_intact_file_is_not_called_truncated(
    tmp_path: Path, subifds: bool, factors: tuple[float, ...]
) -> None:
    levels = _levels(factors)
    path = _write(tmp_path / "p.tif", levels, subifds)
    [(data, kwargs, _)], truncated = _open(path)
    assert truncated == []
    assert [d.shape[:2] for d in data] == [lv.shape[:2] for lv in levels]
    for got, want in zip(data, levels, strict=True):
        np.testing.assert_array_equal(np.asarray(got), want)  # the last, partial tiles included
    ds = [d for _, d in kwargs["metadata"]["pathdistill"]["levels"]]
    assert ds[-1] == pytest.approx((803 / levels[-1].shape[1] + 600 / levels[-1].shape[0]) / 2)


def test_a_reduced_image_of_another_aspect_is_no_level_and_no_loss(tmp_path: Path) -> None:
    levels = _levels((1, 2))
    path = _write(tmp_path / "p.tif", levels, True, extra=np.full((5, 1, 3), 9, np.uint8))
    [(data, _, _)], truncated = _open(path)
    assert truncated == [] and [d.shape[:2] for d in data] == [(600, 803), (300, 401)]


def test_a_cut_subifd_of_a_plain_pyramid_still_warns(tmp_path: Path) -> None:
    path = _write(tmp_path / "p.tif", _levels((1, 2, 8)), True)
    with tifffile.TiffFile(path) as tif:
        last_ifd = tif.pages[0].subifds[-1]
    cut = tmp_path / "cut.tif"
    cut.write_bytes(path.read_bytes()[: last_ifd + 6])
    with warnings.catch_warnings(record=True) as got:
        warnings.simplefilter("always")
        pyr = open_pyramid(cut)
    msgs = [str(w.message) for w in got if issubclass(w.category, TruncatedFileWarning)]
    assert len(pyr.levels) == 2 and len(msgs) == 1 and "lost 1 of its 3 pyramid levels" in msgs[0]
    pyr.close()


@pytest.mark.parametrize(
    ("ome", "planes"), [(True, "Z=3"), (False, "I=3")], ids=["ome-z-stack", "plain-stack"]
)
def test_a_stack_of_images_says_only_the_first_is_shown(tmp_path: Path, ome: bool, planes: str) -> None:
    stack = np.stack([_levels((1,))[0][:256, :320] + k for k in range(3)])  # 3 planes of 320 x 256
    path = tmp_path / ("z.ome.tif" if ome else "z.tif")
    meta = {"axes": "ZYXS"} if ome else None
    tifffile.imwrite(path, stack, ome=ome, metadata=meta, **KW)
    with pytest.warns(
        UserWarning, match=rf"holds 3 images of 320x256 px \({planes}: .*only the first is shown"
    ):
        [(data, _, _)] = read_slide(str(path))
    np.testing.assert_array_equal(np.asarray(data[0]), stack[0])
