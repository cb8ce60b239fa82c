"""Layer choosers and the slide-path lookup behind every widget."""

from __future__ import annotations

import numpy as np
import openslide
import pytest
from napari.layers import Points

from napari_pathdistill._qt._layers import (
    LayerChooser,
    LayerInputError,
    SlideLayerChooser,
    slide_layers,
    slide_path,
)
from napari_pathdistill._qt._upsert import upsert_image, upsert_labels, upsert_layer

pytestmark = pytest.mark.napari


@pytest.fixture
def cmu_rgb(cmu_svs):
    with openslide.OpenSlide(str(cmu_svs)) as s:
        return np.asarray(s.read_region((0, 0), 0, (256, 192)).convert("RGB"))


def _as_reader_layer(viewer, rgb, path, name):
    """An image layer carrying the metadata our reader attaches (contract in docs/architecture.md)."""
    return viewer.add_image(rgb, rgb=True, name=name, scale=(0.499, 0.499),
                            metadata={"pathdistill": {"path": str(path), "mpp": (0.499, 0.499)}})  # fmt: skip


def test_chooser_lists_only_slide_layers_and_follows_the_layer_list(make_napari_viewer, cmu_rgb, cmu_svs):
    viewer = make_napari_viewer()
    chooser = SlideLayerChooser(viewer)
    points = LayerChooser(viewer, Points, "lm")
    assert chooser.choices == ()
    plain = viewer.add_image(cmu_rgb, rgb=True, name="plain png")
    slide = _as_reader_layer(viewer, cmu_rgb, cmu_svs, "CMU")
    viewer.add_labels(np.zeros((4, 4), np.int32), name="labels")
    viewer.add_points(np.zeros((3, 2)), name="landmarks")
    assert chooser.choices == (slide,)
    assert slide_layers(viewer) == [slide]
    assert [c.name for c in points.choices if c is not None] == ["landmarks"]
    viewer.layers.remove(slide)
    assert chooser.choices == ()
    assert plain in viewer.layers


def test_slide_path_errors_say_what_to_do(make_napari_viewer, cmu_rgb, cmu_svs):
    viewer = make_napari_viewer()
    with pytest.raises(LayerInputError, match="No slide chosen"):
        slide_path(None)
    labels = viewer.add_labels(np.zeros((4, 4), np.int32), name="lab")
    with pytest.raises(LayerInputError, match="Labels layer"):
        slide_path(labels)
    plain = viewer.add_image(cmu_rgb, rgb=True, name="plain")
    with pytest.raises(LayerInputError, match="not opened by the napari-pathdistill reader"):
        slide_path(plain)
    assert slide_path(_as_reader_layer(viewer, cmu_rgb, cmu_svs, "CMU")) == cmu_svs


def test_upsert_replaces_results_instead_of_piling_up(make_napari_viewer):
    viewer = make_napari_viewer()
    first = upsert_layer(viewer, "labels", np.ones((3, 3), np.int32), "clusters", scale=(2.0, 2.0))
    second = upsert_layer(viewer, "labels", np.full((3, 3), 2, np.int32), "clusters", scale=(4.0, 4.0))
    assert len(viewer.layers) == 1 and viewer.layers["clusters"] is second and first is not second
    np.testing.assert_array_equal(second.scale, (4.0, 4.0))


def test_upsert_image_updates_in_place_unless_the_kind_differs(make_napari_viewer):
    viewer = make_napari_viewer()
    first = upsert_image(
        viewer, np.zeros((3, 4, 4), np.float32), "map", rgb=True, scale=(2.0, 2.0), opacity=0.7
    )
    again = upsert_image(
        viewer, np.ones((5, 6, 4), np.float32), "map", rgb=True, scale=(4.0, 4.0), opacity=0.5
    )
    assert again is first and len(viewer.layers) == 1 and again.data.shape == (5, 6, 4)
    np.testing.assert_array_equal(again.scale, (4.0, 4.0))
    assert again.opacity == 0.5
    grey = upsert_image(viewer, np.ones((5, 6), np.float32), "map", scale=(4.0, 4.0))  # not RGB: a new layer
    assert grey is not first and not grey.rgb and len(viewer.layers) == 1


def test_in_place_updates_set_only_the_properties_that_change(make_napari_viewer):
    """napari re-slices on every set, equal or not (~20 ms each on this CPU): equal geometry, opacity, units and
    colormap are left alone, changed ones are set."""
    from napari_pathdistill._qt._clusters import cluster_colormap

    viewer = make_napari_viewer()
    geo = {"scale": (2.0, 2.0), "translate": (1.0, 1.0), "units": ("um", "um"), "opacity": 0.5}
    layer = upsert_labels(viewer, np.zeros((3, 3), np.int32), "clusters", colormap=cluster_colormap(3), **geo)
    fired: list[str] = []
    for name in ("scale", "translate", "units", "opacity", "colormap"):
        getattr(layer.events, name).connect(lambda _e, name=name: fired.append(name))
    same = {**geo, "units": tuple(layer.units)}
    again = upsert_labels(viewer, np.ones((3, 3), np.int32), "clusters", colormap=cluster_colormap(3), **same)
    assert again is layer and fired == [] and layer.data.max() == 1  # the data is always set
    upsert_labels(viewer, np.ones((3, 3), np.int32), "clusters", colormap=cluster_colormap(4),
                  **{**same, "scale": (4.0, 4.0), "opacity": 0.7})  # fmt: skip
    assert set(fired) == {"scale", "opacity", "colormap"}
    np.testing.assert_array_equal(layer.scale, (4.0, 4.0))
    assert layer.opacity == 0.7 and layer.colormap == cluster_colormap(4)


def test_mpp_override_fields_keep_a_scanners_um_px(make_napari_viewer):
    """Every widget's "slide um/px override" is the one field: a typed 0.2527 (Aperio 40x) or 0.2265 (Hamamatsu
    40x) stays as typed (two decimals would make them 0.25 / 0.23, 1-2 % off), the arrows step by 0.25."""
    from napari_pathdistill._qt.attention_widget import AttentionWidget
    from napari_pathdistill._qt.embed_widget import EmbedWidget
    from napari_pathdistill._qt.evaluate_widget import EvaluateWidget
    from napari_pathdistill._qt.similarity_widget import SimilarityWidget
    from napari_pathdistill._qt.tissue_widget import TissueWidget

    viewer = make_napari_viewer()
    for cls in (EmbedWidget, AttentionWidget, TissueWidget, SimilarityWidget, EvaluateWidget):
        box = cls(viewer).mpp_override
        assert box.label == "slide um/px override" and box.value == 0.0, cls
        for mpp in (0.2527, 0.2265):
            box.value = mpp
            assert box.value == mpp, cls
        box.native.stepBy(1)
        assert box.value == pytest.approx(0.4765), cls
