"""Where a slide's pixel size comes from: an OME-XML PhysicalSize of a single-level TIFF (OpenSlide ignores it),
and the 72/96 dpi placeholders image editors write (no microscope's: ignored, and the warning says so)."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import openslide
import pytest
import tifffile

from napari_pathdistill._reader import get_reader
from napari_pathdistill.wsi import open_pyramid
from napari_pathdistill.wsi._backend import microscope_mpp


@pytest.fixture(scope="module")
def tissue(cmu_svs: Path) -> np.ndarray:
    with openslide.OpenSlide(str(cmu_svs)) as slide:
        return np.asarray(slide.read_region((600, 600), 0, (512, 384)).convert("RGB"))


def test_single_level_ome_tiff_keeps_its_physical_size(tmp_path: Path, tissue: np.ndarray) -> None:
    path = tmp_path / "export.ome.tif"
    meta = {"PhysicalSizeX": 0.5, "PhysicalSizeXUnit": "µm", "PhysicalSizeY": 0.25, "PhysicalSizeYUnit": "µm"}
    tifffile.imwrite(path, tissue, tile=(128, 128), photometric="rgb", compression="zlib", metadata=meta)
    assert openslide.OpenSlide.detect_format(str(path)) == "generic-tiff"  # OpenSlide alone has no MPP here
    with open_pyramid(path) as pyr:
        assert pyr.mpp == (0.25, 0.5) and pyr.backend == "tifffile"
        np.testing.assert_array_equal(pyr.read_region((0, 0), 0, (512, 384)), tissue)


def test_single_level_tiff_with_resolution_tags_stays_with_openslide(
    tmp_path: Path, tissue: np.ndarray
) -> None:
    path = tmp_path / "tags.tif"
    tifffile.imwrite(path, tissue, tile=(128, 128), photometric="rgb", compression="zlib",
                     resolution=(2e4, 2e4), resolutionunit="CENTIMETER")  # fmt: skip
    with open_pyramid(path) as pyr:
        assert pyr.backend == "openslide" and pyr.mpp == pytest.approx((0.5, 0.5))


@pytest.mark.parametrize("tiled", [True, False])
def test_72_dpi_placeholder_is_no_pixel_size(tmp_path: Path, tissue: np.ndarray, tiled: bool) -> None:
    path = tmp_path / "gimp.tif"
    tile = {"tile": (128, 128)} if tiled else {}
    tifffile.imwrite(path, tissue, photometric="rgb", resolution=(72, 72), resolutionunit="INCH", **tile)
    with open_pyramid(path) as pyr:
        assert pyr.mpp is None and pyr.implausible_mpp == pytest.approx((25400 / 72, 25400 / 72))
    reader = get_reader(str(path))
    assert reader is not None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        (_, kwargs, _), *_ = reader(str(path))
    assert "units" not in kwargs or kwargs["units"] in (None, "pixel", ("pixel", "pixel"))
    assert any("states 352.8 um/px" in str(w.message) for w in caught), [str(w.message) for w in caught]


@pytest.mark.parametrize(
    ("mpp", "kept"),
    [((0.25, 0.25), True), ((4.0, 4.0), True), ((352.8, 352.8), False), ((0.0, 0.5), False),
     ((float("nan"), 0.5), False), (None, False)],
)  # fmt: skip
def test_microscope_mpp(mpp, kept: bool) -> None:
    assert (microscope_mpp(mpp) == mpp) if kept else microscope_mpp(mpp) is None


@pytest.mark.parametrize(
    ("size", "unit", "want"),
    [
        (
            "abc",
            "µm",
            None,
        ),  # before: ValueError "could not convert string to float: 'abc'" out of the reader
        ("0,25", "µm", 0.25),  # a decimal comma (a writer under a German or French locale)
        ("2500", "Å", 0.25),  # before: 2500 um/px, ignored as no microscope's
        ("250000", "pm", 0.25),
        ("1", "pixel", None),  # no length: before, 1 um/px
    ],
)
def test_ome_physical_size_is_read_or_ignored_never_raises(
    tmp_path: Path, tissue: np.ndarray, size: str, unit: str, want: float | None
) -> None:
    path = tmp_path / "odd.ome.tif"
    meta = {"PhysicalSizeX": 0.5, "PhysicalSizeY": 0.5, "PhysicalSizeXUnit": "mm", "PhysicalSizeYUnit": "mm"}
    tifffile.imwrite(path, tissue, tile=(128, 128), photometric="rgb", metadata=meta)
    with tifffile.TiffFile(path) as tif:
        xml = tif.ome_metadata
    for old, new in (('="0.5"', f'="{size}"'), ('Unit="mm"', f'Unit="{unit}"')):
        assert xml.count(old) == 2
        xml = xml.replace(old, new)
    tifffile.tiffcomment(path, xml.encode())  # the file's OME-XML, as a writer stated it
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        layers = get_reader(str(path))(str(path))
    kwargs = layers[0][1]
    if want is None:
        assert "scale" not in kwargs and any("no pixel size" in str(w.message) for w in caught)
    else:
        assert kwargs["scale"] == pytest.approx((want, want)) and kwargs["units"] == ("um", "um")


@pytest.mark.parametrize(
    ("x", "y", "said"),
    [
        (0.0, 0.0, "states 0 um/px, which is no pixel size (zero, negative or not a number)"),
        (0.5, -0.5, "states 0.5 x -0.5 um/px (x, y), which is no pixel size"),  # before: "states 0.5 um/px"
        (1e6, 1e6, "states 1e+06 um/px, no microscope's (a dpi placeholder)"),
    ],
)
def test_the_warning_says_what_is_wrong_with_a_stated_pixel_size(
    tmp_path: Path, tissue: np.ndarray, x: float, y: float, said: str
) -> None:
    path = tmp_path / "odd.ome.tif"
    meta = {"PhysicalSizeX": 0.25, "PhysicalSizeY": 0.75}
    with tifffile.TiffWriter(path, ome=True) as tw:  # a pyramid: read by tifffile, which keeps what it states
        tw.write(tissue, tile=(128, 128), photometric="rgb", subifds=1, metadata=meta)
        tw.write(tissue[::2, ::2], tile=(128, 128), photometric="rgb", subfiletype=1, metadata=None)
    with tifffile.TiffFile(path) as tif:
        xml = tif.ome_metadata.replace('="0.25"', f'="{x}"').replace('="0.75"', f'="{y}"')
    tifffile.tiffcomment(path, xml.encode())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        get_reader(str(path))(str(path))
    assert any(f"odd.ome.tif {said}" in str(w.message) for w in caught), [str(w.message) for w in caught]
