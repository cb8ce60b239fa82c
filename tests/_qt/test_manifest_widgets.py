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


def _manifest_widgets() -> list[str]:
    from pathlib import Path

    from npe2 import PluginManifest

    import napari_pathdistill

    manifest = PluginManifest.from_file(Path(napari_pathdistill.__file__).parent / "napari.yaml")
    return [w.display_name for w in manifest.contributions.widgets or []]


@pytest.mark.parametrize("display_name", _manifest_widgets())
def test_every_manifest_widget_docks_and_its_unset_fields_say_so(make_napari_viewer, display_name):
    """Every widget of the Plugins menu docks. A zero that means 'not set' reads as such: the 'slide um/px
    override' field showed '0.0000' (a pixel size of zero, to a pathologist; 0 = none was in its tooltip only)."""
    viewer = make_napari_viewer()
    dock, widget = viewer.window.add_plugin_dock_widget("napari-pathdistill", display_name)
    assert not dock.isHidden() and dock.name.startswith(display_name)
    box = getattr(widget, "mpp_override", None)
    if box is not None:
        assert box.value == 0.0 and box.native.text() == "none"
        box.value = 0.2527
        assert box.native.text() == "0.2527"
        box.native.setValue(0.0)
        assert box.value == 0.0 and box.native.text() == "none"
