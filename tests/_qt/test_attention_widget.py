"""Attention widget on the real CMU slide: teacher (tiny CNN) vs student (tiny ViT), grid mode, agreement."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("napari_pathdistill.wsi.tiling", reason="wsi core (issue 2) not merged yet")
pytest.importorskip(
    "napari_pathdistill.inference.attention", reason="inference core (issue 7) not merged yet"
)

from napari_pathdistill._qt.attention_widget import AttentionWidget
from napari_pathdistill.metrics.agreement import attention_agreement

pytestmark = pytest.mark.napari


def test_side_by_side_maps_and_agreement(make_napari_viewer, qtbot, cmu_svs, tiny_vit, open_slide, wait_for):
    viewer = make_napari_viewer()
    slide = open_slide(viewer, cmu_svs)
    widget = AttentionWidget(viewer)
    widget.teacher.set_model(tiny_vit)
    widget.student.set_model(tiny_vit)
    widget.slide.value = slide
    widget.region.value = "whole slide"
    widget.n_tiles.value = 3
    widget.run()
    wait_for(widget)
    pair = widget.result
    assert pair is not None, widget.status.value
    assert pair.teacher.shape == pair.student.shape and len(pair.coords) == 3
    # same model on both sides: the maps agree perfectly (an independent check of the plumbing)
    np.testing.assert_allclose(pair.agreement, attention_agreement(pair.teacher, pair.student))
    np.testing.assert_allclose(pair.agreement[np.isfinite(pair.agreement)], 1.0, atol=1e-5)
    assert np.nanmax(np.abs(pair.difference)) < 1e-5
    tiles = viewer.layers["attention tiles"]
    np.testing.assert_allclose(tiles.features["agreement"].to_numpy()[1:], pair.agreement)
    assert viewer.grid.enabled and viewer.grid.stride == 2
    layers = viewer.layers
    names = [layer.name for layer in layers]
    assert names[:4] == [slide.name, "teacher attention", f"{slide.name} (student view)", "student attention"]
    # napari's own grid placement: slide + teacher share the first cell, the view + student the second
    cells = [viewer.grid.position(i, layers) for i in range(4)]
    assert cells[0] == cells[1] == (0, 0) and cells[2] == cells[3] != (0, 0)
    mpp = slide.scale[-1]
    x0, y0 = pair.coords.min(0)
    # the mosaic's first pixel starts at the first tile's corner (level-0 -> um)
    t = viewer.layers["teacher attention"]
    np.testing.assert_allclose(t.translate[-1] - t.scale[-1] / 2, (x0 - 0.5) * mpp, atol=1e-6)
    np.testing.assert_allclose(t.translate[-2] - t.scale[-2] / 2, (y0 - 0.5) * mpp, atol=1e-6)
    widget.opacity.value = 0.25
    assert t.opacity == pytest.approx(0.25)
    # display contrast up to each map's 95th percentile (peaky ViT maps stay visible); data stay in [0, 1]
    s = viewer.layers["student attention"]
    finite = pair.student_mosaic[np.isfinite(pair.student_mosaic)]
    assert tuple(s.contrast_limits) == pytest.approx((0.0, np.percentile(finite, 95)))
    assert np.nanmax(s.data) <= 1.0


def test_wrong_layer_gives_notification(make_napari_viewer, errors):
    viewer = make_napari_viewer()
    widget = AttentionWidget(viewer)
    viewer.add_labels(np.zeros((8, 8), np.int32), name="not a slide")
    widget.run()
    assert errors and "No slide chosen" in errors[-1]
