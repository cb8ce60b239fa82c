"""The npe2 manifest's widget contributions open as docks with the viewer injected."""

from __future__ import annotations

import pytest

from napari_pathdistill._qt.attention_widget import AttentionWidget
from napari_pathdistill._qt.embed_widget import EmbedWidget
from napari_pathdistill._qt.evaluate_widget import EvaluateWidget
from napari_pathdistill._qt.similarity_widget import SimilarityWidget

pytestmark = pytest.mark.napari


@pytest.mark.parametrize(
    ("display_name", "cls"),
    [("Embed slide", EmbedWidget), ("Teacher vs student attention", AttentionWidget),
     ("Cross-stain similarity", SimilarityWidget), ("Evaluate", EvaluateWidget)],
)  # fmt: skip
def test_dock_widget_from_manifest(make_napari_viewer, display_name, cls):
    viewer = make_napari_viewer()
    _dock, widget = viewer.window.add_plugin_dock_widget("napari-pathdistill", display_name)
    assert isinstance(widget, cls)  # npe2 injects the viewer (wrapped in napari's PublicOnlyProxy)
    assert widget.run_button.enabled and not widget.cancel_button.enabled
    viewer.add_points(name="landmarks")
    assert [layer.name for layer in widget.viewer.layers] == ["landmarks"]
