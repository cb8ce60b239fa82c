"""slide_metadata / metadata_rows on the real slides (SVS, SVS without MPP, DICOM, OME-TIFF) and a written TIFF."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import openslide
import pytest
import tifffile

from napari_pathdistill.wsi import open_pyramid
from napari_pathdistill.wsi.metadata import NO_MPP, LevelInfo, metadata_rows, slide_metadata


def test_cmu_svs_facts_are_openslides(cmu_svs: Path) -> None:
    with open_pyramid(cmu_svs) as pyr:
        meta = slide_metadata(pyr)
    with openslide.OpenSlide(str(cmu_svs)) as s:
        props, assoc = dict(s.properties), sorted(s.associated_images)
    assert (meta.backend, meta.vendor) == ("openslide", props["openslide.vendor"]) == ("openslide", "aperio")
    assert meta.objective_power == float(props["openslide.objective-power"]) == 20.0
    assert meta.mpp == pytest.approx((0.499, 0.499)) and meta.has_mpp
    assert meta.levels == (LevelInfo(width=2220, height=2967, downsample=1.0, tile=(240, 240)),)
    assert list(meta.associated) == assoc == ["label", "macro", "thumbnail"]
    assert meta.icc_profile is None and meta.scanner == "CPAPERIOCS"
    rows = dict(metadata_rows(meta))
    assert rows["file"] == "CMU-1-Small-Region.svs"
    assert rows["objective"] == "20x"
    assert rows["MPP"] == "0.499 x 0.499 um/px (x, y)"
    assert rows["levels"] == "0: 2220 x 2967 px, downsample 1"
    assert rows["ICC profile"] == "absent (raw RGB shown)"
    assert rows["scan date"] == "12/29/09"


def test_tcga_svs_without_mpp_says_so(tcga_svs: Path) -> None:
    with open_pyramid(tcga_svs) as pyr:
        meta = slide_metadata(pyr)
    assert meta.mpp is None and not meta.has_mpp
    rows = dict(metadata_rows(meta))
    assert rows["MPP"] == NO_MPP == "no MPP: shown in pixels"
    assert rows["objective"] == "not stated"
    assert rows["levels"] == "0: 4443 x 3567 px, downsample 1\n1: 2221 x 1783 px, downsample 2.001"
    assert rows["ICC profile"] == "present (sRGB IEC61966-2.1)"
    assert rows["associated"] == "thumbnail"


def test_srgb_pyramid_reports_the_conversion(tcga_svs: Path) -> None:
    with open_pyramid(tcga_svs, color="srgb") as pyr:
        meta = slide_metadata(pyr)
    assert meta.color == "srgb"
    assert dict(metadata_rows(meta))["ICC profile"] == "present (sRGB IEC61966-2.1), converted to sRGB"


def test_dicom_folder(cmu_dicom_dir: Path) -> None:
    with open_pyramid(cmu_dicom_dir) as pyr:
        meta = slide_metadata(pyr)
    assert meta.vendor == "dicom" and meta.path.name == "CMU-1-Small-Region_DICOM"
    assert meta.mpp == pytest.approx((0.499, 0.499), abs=1e-3)
    assert {"label", "macro", "thumbnail"} <= set(meta.associated)
    assert meta.icc_profile  # the series carries an ICC profile


def test_dicom_scan_date_scanner_and_objective(cmu_dicom_dir: Path) -> None:
    """A DICOM series states when it was acquired (AcquisitionDateTime), by which scanner (Manufacturer,
    ManufacturerModelName) and objective (OpticalPathSequence's ObjectiveLensPower): the dock said none of them
    (only an SVS's aperio.Date and Aperio/Hamamatsu/Leica scanner properties were read)."""
    from napari_pathdistill.wsi.metadata import _openslide_facts

    with open_pyramid(cmu_dicom_dir) as pyr:
        rows = dict(metadata_rows(slide_metadata(pyr)))
    assert rows["scan date"] == "2009-12-29 09:59:15"  # its dicom.AcquisitionDateTime 20091229095915
    assert rows["scanner"] == "not stated"  # this series' Manufacturer is the converter's "Unknown"
    props = {  # the keys OpenSlide lists for a DICOM series of a scanner that states them
        "openslide.vendor": "dicom",
        "dicom.Manufacturer": "Leica Biosystems",
        "dicom.ManufacturerModelName": "Aperio GT 450",
        "dicom.OpticalPathSequence[0].ObjectiveLensPower": "40",
    }
    assert _openslide_facts(props) == ("dicom", 40.0, "Leica Biosystems Aperio GT 450")


def test_ome_tiff_facts_from_its_xml(os2_pair: tuple[Path, Path]) -> None:
    with open_pyramid(os2_pair[0]) as pyr:
        meta = slide_metadata(pyr)
    assert meta.backend == "tifffile"
    assert meta.vendor == "OME-TIFF (OME Bio-Formats 6.7.0)"
    assert meta.mpp == pytest.approx((0.2271, 0.2271), abs=1e-4)
    assert meta.associated == () and meta.icc_profile is None
    assert dict(metadata_rows(meta))["associated"] == "none"


def test_plain_tiff_facts_from_its_tags(tmp_path: Path, cmu_rgb: np.ndarray) -> None:
    path = tmp_path / "scan.tif"
    tags = [(271, "s", 0, "Acme Scanners", True), (272, "s", 0, "Model 9", True)]
    tifffile.imwrite(path, cmu_rgb[:512, :512], tile=(256, 256), photometric="rgb", software="ScanSoft 2.1",
                     extratags=tags)  # fmt: skip
    with open_pyramid(path) as pyr:
        meta = slide_metadata(pyr)
    assert meta.vendor == "TIFF (ScanSoft 2.1)"
    assert meta.scanner == "Acme Scanners Model 9"
    assert meta.mpp is None and dict(metadata_rows(meta))["MPP"] == NO_MPP


def test_multiplex_slide_lists_its_channels_and_no_rgb(tmp_path: Path) -> None:
    from _multiplex_files import NAMES, channel_levels, write_ome_multiplex

    path = write_ome_multiplex(tmp_path / "mx.ome.tif", channel_levels("uint16"))
    with open_pyramid(path) as pyr:
        rows = dict(metadata_rows(slide_metadata(pyr)))
    assert rows["channels"] == f"4: {', '.join(NAMES)}" == "4: DAPI, CD3, CD8, PanCK"
    assert rows["ICC profile"] == "absent"  # not "raw RGB shown": its channels are shown with colormaps
    assert list(rows)[:7] == ["file", "backend", "vendor", "scanner", "objective", "MPP", "channels"]


def test_brightfield_slide_has_no_channels_row(os2_pair: tuple[Path, Path]) -> None:
    with open_pyramid(os2_pair[0]) as pyr:
        assert "channels" not in dict(metadata_rows(slide_metadata(pyr)))
