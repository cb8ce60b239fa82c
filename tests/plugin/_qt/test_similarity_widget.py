"""Similarity widget on the real cross-scanner OS-2 pair (Hamamatsu NDPI vs Olympus VSI, Ki67)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("napari_pathdistill.wsi.tiling", reason="wsi core (issue 2) not merged yet")
pytest.importorskip("napari_pathdistill.inference.embed", reason="inference core (issue 7) not merged yet")

from napari_pathdistill._qt.similarity_widget import SimilarityWidget
from napari_pathdistill.evaluation.robustness import pair_metrics

pytestmark = pytest.mark.napari


def test_os2_pair_registers_and_compares(make_napari_viewer, qtbot, os2_pair, tiny_vit, open_slide, wait_for):
    viewer = make_napari_viewer()
    a, b = (open_slide(viewer, p) for p in os2_pair)
    widget = SimilarityWidget(viewer)
    widget.model.set_model(tiny_vit)
    widget.slide_a.value, widget.slide_b.value = a, b
    widget.tile_px.value = tiny_vit.spec.tile_px
    widget.mpp.value = 1.0
    widget.min_tissue.value = 0.0
    widget.top_k.value = 1
    widget.run()
    wait_for(widget)
    res = widget.result
    assert res is not None, widget.status.value
    # both scans are the same 500 um field: the registered B tile sits at the same physical place (+- 10 um)
    mpp_a, mpp_b = a.scale[-1], b.scale[-1]
    np.testing.assert_allclose(res.coords_b * mpp_b, res.coords_a * mpp_a, atol=10.0)
    overlay = viewer.layers[f"{a.name} cosine to B"]
    np.testing.assert_allclose(overlay.scale[-2:], res.scale)
    assert np.isfinite(res.overlay).sum() == len(res.cosine)
    assert f"{res.mean_cosine:.3f}" in widget.summary.value
    assert pair_metrics(np.eye(3), np.eye(3), ks=(1,), device="cpu").topk[1] == 1.0
    assert 0.0 <= res.topk_accuracy <= 1.0


def test_same_layer_and_half_landmarks_are_refused(make_napari_viewer, os2_pair, errors, open_slide):
    viewer = make_napari_viewer()
    a = open_slide(viewer, os2_pair[0])
    widget = SimilarityWidget(viewer)
    widget.slide_a.value = widget.slide_b.value = a
    widget.run()
    assert "same layer" in errors[-1]
    b = open_slide(viewer, os2_pair[1])
    widget.slide_b.value = b
    widget.landmarks_a.value = viewer.add_points(np.array([[10.0, 10.0], [50, 10], [10, 60]]), name="lm A")
    widget.run()
    assert "both slides" in errors[-1]


def test_birl_plain_jpg_pair_is_refused_with_a_clear_message(make_napari_viewer, shared_data, errors):
    """BIRL H&E vs IHC are plain 5 % JPEGs without um/px: they open as napari images but are not slides."""
    viewer = make_napari_viewer()
    kidney = shared_data / "paired" / "birl_anhir" / "rat-kidney_"
    for name in ("Rat-Kidney_HE.jpg", "Rat-Kidney_PanCytokeratin.jpg"):
        viewer.open(str(kidney / name), plugin="napari")
    widget = SimilarityWidget(viewer)
    assert len(viewer.layers) == 2 and widget.slide_a.choices == ()
    widget.run()
    assert "OME-TIFF" in errors[-1] and "um/px" in errors[-1]
