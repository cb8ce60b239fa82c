"""An OME-TIFF's label and macro (further Image series named so, as Bio-Formats and QuPath write them) are its
associated images, as an SVS's are. The file is CMU-1-Small-Region converted: its slide, label and macro."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile

from napari_pathdistill._reader import read_slide
from napari_pathdistill.errors import WSIError
from napari_pathdistill.wsi import open_pyramid
from napari_pathdistill.wsi.metadata import metadata_rows, slide_metadata

MPP = 0.499


@pytest.fixture(scope="module")
def cmu_parts(cmu_svs: Path) -> dict[str, np.ndarray]:
    import openslide

    with openslide.OpenSlide(str(cmu_svs)) as s:
        parts = {k: np.asarray(v.convert("RGB")) for k, v in s.associated_images.items()}
        parts["slide"] = np.asarray(s.read_region((0, 0), 0, s.dimensions).convert("RGB"))
    return parts


def _write(path: Path, parts: dict[str, np.ndarray], extra: dict[str, str], *, levels: int = 2) -> Path:
    """The slide (``levels`` levels, resolution tags and OME PhysicalSize) then one Image per ``extra`` item
    (OME Image name -> key of ``parts``)."""
    res = {"resolution": (1e4 / MPP, 1e4 / MPP), "resolutionunit": "CENTIMETER"}
    meta = {"Name": "CMU-1-Small-Region.svs", "PhysicalSizeX": MPP, "PhysicalSizeY": MPP}
    kw = {"photometric": "rgb", "compression": "zlib"}
    with tifffile.TiffWriter(path, ome=True) as tw:
        tw.write(parts["slide"], tile=(256, 256), subifds=levels - 1, metadata=meta, **res, **kw)
        for k in range(1, levels):
            tw.write(parts["slide"][:: 2**k, :: 2**k], tile=(256, 256), subfiletype=1, metadata=None, **kw)
        for name, key in extra.items():
            tw.write(parts[key], metadata={"Name": name}, **kw)
    return path


def test_label_and_macro_images_of_an_ome_pyramid(tmp_path, cmu_parts) -> None:
    names = {
        "label image": "label",
        "macro image": "macro",
        "scene 2": "thumbnail",
    }  # scene 2: no associated name
    path = _write(tmp_path / "cmu.ome.tif", cmu_parts, names)
    with open_pyramid(path) as pyr:
        assert pyr.backend == "tifffile" and pyr.associated_image_names() == ["label", "macro"]  # before: []
        assert np.array_equal(pyr.read_associated("label"), cmu_parts["label"])
        assert np.array_equal(pyr.read_associated("macro"), cmu_parts["macro"])
        with pytest.raises(WSIError, match="No associated image 'thumbnail'; this slide has: label, macro"):
            pyr.read_associated("thumbnail")
        assert dict(metadata_rows(slide_metadata(pyr)))["associated"] == "label, macro"


def test_single_level_ome_tiff_with_a_label_stays_with_tifffile(tmp_path, cmu_parts) -> None:
    """OpenSlide reads a single-level tiled TIFF with resolution tags, but exposes no label of it."""
    path = _write(tmp_path / "cmu1.ome.tif", cmu_parts, {"Overview": "macro", "Label": "label"}, levels=1)
    with open_pyramid(path) as pyr:
        assert pyr.backend == "tifffile" and pyr.mpp == pytest.approx((MPP, MPP))
        assert pyr.associated_image_names() == ["label", "macro"]
        assert np.array_equal(pyr.read_associated("macro"), cmu_parts["macro"])


def test_the_reader_adds_them_when_asked(tmp_path, cmu_parts, monkeypatch) -> None:
    path = _write(tmp_path / "cmu.ome.tif", cmu_parts, {"label image": "label", "macro image": "macro"})
    monkeypatch.setenv("PATHDISTILL_ASSOCIATED", "label,macro")
    layers = read_slide(str(path))
    assert [kw["name"] for _, kw, _ in layers] == [
        "cmu.ome.tif",
        "cmu.ome.tif [label]",
        "cmu.ome.tif [macro]",
    ]
    assert np.array_equal(layers[1][0], cmu_parts["label"])


def test_with_non_square_pixels_the_label_stands_as_high_as_the_slide(tmp_path, cmu_parts) -> None:
    """MPP-Y 0.5, MPP-X 0.25: the slide is 0.5 um x its rows high; the label was scaled with MPP-X (half as high)."""
    from napari_pathdistill._reader import associated_layers

    path = _write(tmp_path / "aniso.ome.tif", cmu_parts, {"label image": "label"})
    with tifffile.TiffFile(path) as tif:
        xml = tif.ome_metadata.replace(f'PhysicalSizeY="{MPP}"', 'PhysicalSizeY="0.5"')
        xml = xml.replace(f'PhysicalSizeX="{MPP}"', 'PhysicalSizeX="0.25"')
    tifffile.tiffcomment(path, xml.encode())
    with open_pyramid(path) as pyr:
        assert pyr.mpp == (0.5, 0.25)
        ((img, kw, _),) = associated_layers(pyr, ["label"])
        h0, w0 = pyr.levels[0].shape
    assert img.shape[0] * kw["scale"][0] == pytest.approx(h0 * 0.5)  # before: h0 * 0.25
    assert kw["translate"][1] == pytest.approx(w0 * 0.25 * 1.05)
