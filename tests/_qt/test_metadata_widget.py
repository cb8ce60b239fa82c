"""Slide metadata dock on real slides: follows the selection, no-MPP state, associated images, ICC -> sRGB, units."""

from __future__ import annotations

import itertools
import os
import warnings
from pathlib import Path

import numpy as np
import openslide
import pytest

from _icc_files import imagecms_srgb, srgb_profile_of, swap_primaries, write_icc_tiff
from napari_pathdistill._qt import metadata_widget
from napari_pathdistill._qt.metadata_widget import NO_MPP_STYLE, NO_SLIDE, OTHER_LAYER, MetadataWidget
from napari_pathdistill.wsi.metadata import NO_MPP

pytestmark = pytest.mark.napari

DOCS_IMAGES = Path(__file__).resolve().parents[2] / "docs" / "images"


@pytest.fixture
def notices(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[str]]:
    """The widget's warning / error / info notifications, by kind."""
    seen: dict[str, list[str]] = {"warning": [], "error": [], "info": []}
    for kind in seen:
        monkeypatch.setattr(metadata_widget, f"show_{kind}", seen[kind].append)
    return seen


def _docked(viewer) -> MetadataWidget:
    _dock, widget = viewer.window.add_plugin_dock_widget("napari-pathdistill", "Slide metadata")
    assert isinstance(widget, MetadataWidget)
    return widget


def test_follows_the_selection_and_highlights_no_mpp(
    make_napari_viewer, cmu_svs: Path, tcga_svs: Path, open_slide, notices
) -> None:
    viewer = make_napari_viewer()
    widget = _docked(viewer)
    assert widget.hint.value == NO_SLIDE and widget.meta is None
    cmu = open_slide(viewer, cmu_svs)
    assert widget.layer.name == cmu.name  # a new layer becomes the active one
    rows = {k: lab.value for k, lab in widget.rows.items()}
    assert rows["file"].replace("\u200b", "") == "CMU-1-Small-Region.svs"
    assert (rows["backend"], rows["vendor"], rows["objective"]) == ("openslide", "aperio", "20x")
    assert rows["MPP"] == "0.499 x 0.499 um/px (x, y)" and widget.rows["MPP"].native.styleSheet() == ""
    assert rows["levels"] == "0: 2220 x 2967 px, downsample 1"
    assert rows["ICC profile"] == "absent (raw RGB shown)" and not widget.srgb.enabled
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the reader's no-MPP warning (tested below)
        tcga = open_slide(viewer, tcga_svs)
    assert widget.layer.name == tcga.name
    assert widget.rows["MPP"].value == NO_MPP and widget.rows["MPP"].native.styleSheet() == NO_MPP_STYLE
    levels = widget.rows["levels"].value
    assert levels == "0: 4443 x 3567 px, downsample 1\n1: 2221 x 1783 px, downsample 2.001"
    assert widget.srgb.enabled  # its sRGB ICC profile
    viewer.layers.selection.active = cmu
    assert widget.layer.name == cmu.name and widget.rows["MPP"].native.styleSheet() == ""
    viewer.add_points(name="marks")  # not a slide: the last slide stays shown
    assert widget.layer.name == cmu.name and widget.rows["vendor"].value == "aperio"
    viewer.layers.remove(cmu)
    viewer.layers.remove(tcga)
    assert widget.meta is None and widget.hint.value == NO_SLIDE
    assert not widget.hint.native.isHidden() and widget.rows["MPP"].native.isHidden()
    assert notices["error"] == []


def test_another_layer_selected_says_whose_facts_are_shown(
    make_napari_viewer, cmu_svs: Path, tcga_svs: Path, open_slide
) -> None:
    """A feature map (or points) selected left the last slide's rows on screen without a word: with a map of a
    slide in pixels selected, 'no MPP: shown in pixels' read as the map's own facts. The hint now names both."""
    viewer = make_napari_viewer()
    widget = _docked(viewer)
    cmu = open_slide(viewer, cmu_svs)
    assert widget.hint.native.isHidden()  # the shown slide is the selected one
    # (the docked widget holds napari proxies of the layers: compared with ==)
    fmap = viewer.add_image(np.zeros((20, 30), np.float32), name="some feature map", colormap="viridis")
    assert widget.layer == cmu and not widget.hint.native.isHidden()
    assert widget.hint.value == OTHER_LAYER.format(active="some feature map", slide=cmu.name)
    assert (
        widget.hint.value
        == "'some feature map' is not a slide layer: showing slide 'CMU-1-Small-Region.svs'."
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the reader's no-MPP warning
        tcga = open_slide(viewer, tcga_svs)
    assert widget.layer == tcga and widget.hint.native.isHidden()
    viewer.layers.selection.active = fmap
    assert widget.hint.value == OTHER_LAYER.format(active="some feature map", slide=tcga.name)
    viewer.layers.selection.active = cmu
    assert widget.layer == cmu and widget.hint.native.isHidden()
    viewer.layers.remove(cmu)
    viewer.layers.remove(tcga)
    assert widget.meta is None and widget.hint.value == NO_SLIDE and not widget.hint.native.isHidden()


def test_associated_image_buttons_add_layers(make_napari_viewer, cmu_svs: Path, open_slide) -> None:
    viewer = make_napari_viewer()
    widget = _docked(viewer)
    open_slide(viewer, cmu_svs)
    buttons = {b.text: b for b in widget.buttons}
    assert list(buttons) == ["label", "macro", "thumbnail"]
    buttons["label"].clicked()
    buttons["macro"].clicked()
    with openslide.OpenSlide(str(cmu_svs)) as s:
        label = np.asarray(s.associated_images["label"].convert("RGB"))
    layer = viewer.layers["CMU-1-Small-Region.svs [label]"]
    np.testing.assert_array_equal(layer.data, label)
    assert "CMU-1-Small-Region.svs [macro]" in viewer.layers
    assert layer.units == viewer.layers[0].units  # placed beside the slide in um
    buttons["thumbnail"].clicked()
    buttons["label"].clicked()  # again: replaced where it was, not moved over the others
    spans = []  # world x range of the slide and of each associated image: side by side, none over another
    for lay in viewer.layers:
        x0 = lay.translate[-1]
        spans.append((x0, x0 + lay.data.shape[1] * lay.scale[-1] if lay.ndim == 2 and not lay.multiscale
                      else x0 + lay.level_shapes[0][1] * lay.scale[-1]))  # fmt: skip
    assert len(spans) == 4
    ordered = sorted(spans)
    assert all(a[1] < b[0] for a, b in itertools.pairwise(ordered)), spans
    assert viewer.layers["CMU-1-Small-Region.svs [label]"].translate[-1] == layer.translate[-1]


def test_srgb_checkbox_replaces_the_layer_data_in_place(
    make_napari_viewer, tmp_path: Path, cmu_rgb: np.ndarray, tcga_svs: Path, open_slide, notices
) -> None:
    crop = np.ascontiguousarray(cmu_rgb[1000:1600, 800:1300])
    wide = swap_primaries(srgb_profile_of(tcga_svs))
    path = write_icc_tiff(tmp_path / "wide_profile.tif", crop, wide)
    viewer = make_napari_viewer()
    widget = _docked(viewer)
    layer = open_slide(viewer, path)
    raw_name = layer.data[0].name
    assert widget.srgb.enabled and widget.srgb.value is False
    # the swapped profile keeps the description of the sRGB profile it was made from
    assert widget.rows["ICC profile"].value == "present (sRGB IEC61966-2.1)"
    widget.srgb.value = True
    assert viewer.layers[0] is layer and layer.data[0].name != raw_name  # same layer, new levels
    np.testing.assert_array_equal(np.asarray(layer.data[0]), imagecms_srgb(crop, wide))
    np.testing.assert_array_equal(np.asarray(layer.data[1]), imagecms_srgb(crop[::2, ::2].copy(), wide))
    assert layer.metadata["pathdistill"]["color"] == "srgb"
    assert widget.rows["ICC profile"].value.endswith("converted to sRGB")
    widget.srgb.value = False
    np.testing.assert_array_equal(np.asarray(layer.data[0]), crop)
    assert layer.metadata["pathdistill"]["color"] == "raw" and notices["error"] == []


def test_damaged_profile_cannot_be_ticked(
    make_napari_viewer, tmp_path: Path, cmu_rgb: np.ndarray, tcga_svs: Path, open_slide, notices
) -> None:
    crop = np.ascontiguousarray(cmu_rgb[:256, :256])
    path = write_icc_tiff(tmp_path / "damaged.tif", crop, srgb_profile_of(tcga_svs)[:300])
    viewer = make_napari_viewer()
    widget = _docked(viewer)
    layer = open_slide(viewer, path)
    assert widget.rows["ICC profile"].value == "present (unreadable)" and widget.srgb.enabled
    widget.srgb.value = True
    assert notices["error"] == [
        "damaged.tif: its embedded ICC profile (300 bytes) cannot be read (cannot open profile from string); "
        "the slide is shown with its raw colours."
    ]
    assert widget.srgb.value is False and layer.metadata["pathdistill"]["color"] == "raw"
    np.testing.assert_array_equal(np.asarray(layer.data[0]), crop)


def test_long_file_name_wraps_without_widening_the_window(
    make_napari_viewer, tmp_path: Path, cmu_rgb: np.ndarray, open_slide, qtbot
) -> None:
    name = "_".join(["TCGA-XX-0000-01Z-00-DX1.ABCDEF01-2345-6789-ABCD-EF0123456789"] * 3) + ".tif"
    path = write_icc_tiff(tmp_path / name, np.ascontiguousarray(cmu_rgb[:256, :256]), None)
    viewer = make_napari_viewer(show=True)
    window = viewer.window._qt_window
    window.resize(1200, 800)
    widget = _docked(viewer)
    qtbot.wait(50)
    before = window.width()
    open_slide(viewer, path)
    qtbot.wait(50)
    label = widget.rows["file"].native
    assert label.wordWrap() and label.text().replace("\u200b", "") == name
    assert window.width() == before
    assert label.height() > 2 * label.fontMetrics().height()  # wrapped onto several lines


def test_slide_without_mpp_leaves_other_layers_units_and_warns_once(
    make_napari_viewer, cmu_svs: Path, tcga_svs: Path, open_slide, notices, qtbot
) -> None:
    viewer = make_napari_viewer()
    widget = _docked(viewer)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        cmu = open_slide(viewer, cmu_svs)
        units, scale = cmu.units, tuple(cmu.scale)
        tcga = open_slide(viewer, tcga_svs)
    no_mpp = [str(w.message) for w in seen if "has no pixel size" in str(w.message)]
    assert len(no_mpp) == 1 and no_mpp[0].startswith("tcga-cr-7395-01a-01-ts1.svs has no pixel size (MPP)")
    assert cmu.units == units and [str(u) for u in units] == ["micrometer", "micrometer"]
    assert tuple(cmu.scale) == scale == pytest.approx((0.499, 0.499))
    assert [str(u) for u in tcga.units] == ["pixel", "pixel"] and tuple(tcga.scale) == (1.0, 1.0)
    assert notices["warning"] == [
        "'tcga-cr-7395-01a-01-ts1.svs' has no MPP and is shown in pixels; the other layers keep their own units "
        "(micrometer), but napari's scale bar shows no unit while layers in pixels and in physical units are "
        "open together. The analysis widgets' 'slide um/px override' only makes their tiles be cut at the right "
        "um/px; the slide layer and the maps drawn on it stay in pixels, because the file states no MPP. Close "
        "one of them to get a scale bar with a unit."
    ]
    # an override never gives this slide um: the notice must not promise it (it said "set the override ... to
    # compute in um" while the slide layer and its maps stayed in pixels, the scale bar unitless)
    assert "to compute in um" not in notices["warning"][0]
    assert widget.layer.name == tcga.name and widget.rows["MPP"].value == NO_MPP
    if os.environ.get("PATHDISTILL_SAVE_SCREENSHOTS"):
        viewer.window.show()  # restores napari's saved window geometry: resize afterwards
        viewer.window._qt_window.resize(1280, 800)
        viewer.reset_view()
        qtbot.wait(500)
        viewer.window._qt_window.grab().save(str(DOCS_IMAGES / "metadata_widget_no_mpp.png"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        open_slide(viewer, tcga_svs)  # a second slide in pixels: no second notice
    assert len(notices["warning"]) == 1 and cmu.units == units


def test_multiplex_slide_shows_its_channels(make_napari_viewer, tmp_path: Path, open_slide, cmu_svs) -> None:
    from _multiplex_files import channel_levels, write_ome_multiplex

    viewer = make_napari_viewer()
    widget = _docked(viewer)
    open_slide(viewer, cmu_svs)
    assert widget.rows["channels"].native.isHidden()  # brightfield: no such row
    open_slide(viewer, write_ome_multiplex(tmp_path / "mx.ome.tif", channel_levels("uint8")))
    assert widget.layer.name == "DAPI"  # its first channel layer
    assert widget.rows["channels"].value == "4: DAPI, CD3, CD8, PanCK"
    assert not widget.rows["channels"].native.isHidden()
    assert widget.rows["ICC profile"].value == "absent" and not widget.srgb.enabled


def test_a_dicom_uid_file_name_wraps_inside_the_dock(
    make_napari_viewer, tmp_path: Path, cmu_rgb: np.ndarray, open_slide, qtbot
) -> None:
    """A single DICOM instance opened by itself is named by its UID: a 38-digit run had no break opportunity and
    was cut off at the dock's edge."""
    name = "1.2.826.0.1.3680043.8.498.46702941076792458794464453066648511350.tif"
    path = write_icc_tiff(tmp_path / name, np.ascontiguousarray(cmu_rgb[:256, :256]), None)
    viewer = make_napari_viewer(show=True)
    viewer.window._qt_window.resize(1000, 700)
    widget = _docked(viewer)
    open_slide(viewer, path)
    qtbot.wait(50)
    label = widget.rows["file"].native
    assert label.text().replace("\u200b", "") == name
    widest = max(label.fontMetrics().horizontalAdvance(part) for part in label.text().split("\u200b"))
    assert widest <= label.contentsRect().width()  # every unbreakable part fits: nothing is cut off


def test_scan_date_and_a_12_bit_range_are_shown(
    make_napari_viewer, cmu_svs: Path, open_slide, tmp_path
) -> None:
    """``metadata_rows`` gives them, but the dock showed only its fixed rows: both were never seen."""
    import tifffile

    viewer = make_napari_viewer()
    widget = _docked(viewer)
    open_slide(viewer, cmu_svs)
    assert widget.rows["scan date"].value == "12/29/09" and not widget.rows["scan date"].native.isHidden()
    assert widget.rows["pixel values"].native.isHidden()
    with openslide.OpenSlide(str(cmu_svs)) as s:
        rgb = np.asarray(s.read_region((0, 0), 0, (512, 512)).convert("RGB"))
    path = tmp_path / "he12.tif"
    with tifffile.TiffWriter(
        path
    ) as tw:  # the tissue in 12 bits, a pyramid of two levels (tifffile reads it)
        twelve = ((rgb.astype(np.uint32) * 4095 + 127) // 255).astype(np.uint16)
        tw.write(
            twelve, tile=(128, 128), photometric="rgb", subifds=1, resolution=(2e4, 2e4), resolutionunit=3
        )
        tw.write(twelve[::2, ::2], tile=(128, 128), photometric="rgb", subfiletype=1)
    open_slide(viewer, path)
    assert widget.rows["pixel values"].value.startswith("0-4095 (")
    assert not widget.rows["pixel values"].native.isHidden() and widget.rows["scan date"].native.isHidden()
