"""The reader in a real napari viewer: viewer.open with our plugin, layers, scale/units, screenshot, errors."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.napari

DOCS_IMAGES = Path(__file__).resolve().parents[2] / "docs" / "images"


def test_open_svs_in_viewer(make_napari_viewer, qtbot, cmu_svs: Path) -> None:
    viewer = make_napari_viewer(show=True)  # the canvas only renders when shown (Xvfb in CI)
    viewer.window._qt_window.resize(1000, 800)
    layers = viewer.open(str(cmu_svs), plugin="napari-pathdistill")
    assert len(layers) == 1 and len(viewer.layers) == 1
    layer = viewer.layers[0]
    assert layer.multiscale and layer.rgb
    np.testing.assert_allclose(layer.scale, (0.499, 0.499))
    assert [str(u) for u in layer.units] == ["micrometer", "micrometer"]
    assert layer.metadata["pathdistill"]["path"] == str(cmu_svs)
    viewer.scale_bar.visible = True
    viewer.reset_view()
    qtbot.waitUntil(lambda: layer.loaded, timeout=30_000)
    qtbot.wait(200)
    shot = viewer.screenshot(canvas_only=True, flash=False)
    assert shot.ndim == 3 and shot.shape[2] == 4
    rgb = shot[..., :3].astype(float)
    # not blank: H&E pixels present (pink/purple, clearly saturated) and real contrast
    sat = rgb.max(axis=2) - rgb.min(axis=2)
    assert (sat > 40).mean() > 0.05 and rgb.std() > 20
    if os.environ.get("PATHDISTILL_SAVE_SCREENSHOTS"):
        from skimage.io import imsave

        DOCS_IMAGES.mkdir(parents=True, exist_ok=True)
        imsave(DOCS_IMAGES / "reader_cmu_small_region.png", shot, check_contrast=False)


def test_open_multilevel_without_mpp(make_napari_viewer, tcga_svs: Path) -> None:
    viewer = make_napari_viewer()
    with pytest.warns(UserWarning, match="no pixel size"):
        viewer.open(str(tcga_svs), plugin="napari-pathdistill")
    layer = viewer.layers[0]
    assert layer.multiscale and len(layer.data) == 2
    np.testing.assert_allclose(layer.scale, (1.0, 1.0))


def test_open_dicom_folder(make_napari_viewer, cmu_dicom_dir: Path) -> None:
    viewer = make_napari_viewer()
    viewer.open(str(cmu_dicom_dir), plugin="napari-pathdistill")
    np.testing.assert_allclose(viewer.layers[0].scale, (0.499, 0.499), rtol=1e-3)


def test_corrupt_file_gives_clear_message(make_napari_viewer, tmp_path: Path) -> None:
    bad = tmp_path / "broken.svs"
    bad.write_bytes(b"\x00" * 1000)
    viewer = make_napari_viewer()
    with pytest.raises(Exception) as info:
        viewer.open(str(bad), plugin="napari-pathdistill")
    chain = [info.value, info.value.__cause__, info.value.__context__]
    messages = " | ".join(str(e) for e in chain if e is not None)
    assert "broken.svs" in messages and ("not a whole-slide image" in messages or "cannot read" in messages)
    assert len(viewer.layers) == 0


def test_sample_data_menu_contribution(make_napari_viewer) -> None:
    viewer = make_napari_viewer()
    viewer.open_sample("napari-pathdistill", "cmu_small_region")
    assert viewer.layers[0].name == "CMU-1-Small-Region"
    np.testing.assert_allclose(viewer.layers[0].scale, (0.499, 0.499))
