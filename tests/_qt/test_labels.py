"""Status labels of every dock widget wrap and elide: no message can resize the window."""

from __future__ import annotations

import pytest

from napari_pathdistill._qt._labels import MAX_CHARS, StatusLabel, display_text
from napari_pathdistill._qt.attention_widget import AttentionWidget
from napari_pathdistill._qt.embed_widget import EmbedWidget
from napari_pathdistill._qt.evaluate_widget import EvaluateWidget
from napari_pathdistill._qt.similarity_widget import SimilarityWidget
from napari_pathdistill._qt.tissue_widget import TissueWidget

pytestmark = pytest.mark.napari

#: an offline hub error as users saw it: one long unbroken path among words, then a very long tail
LONG = (
    "Could not get the weights of 'h-optimus-0' from /root/.cache/huggingface/hub/models--bioptimus--H-optimus-0/"
    "snapshots/0123456789abcdef0123456789abcdef01234567/model.safetensors " + "x" * 5000
)


def test_display_text_breaks_long_runs_and_elides():
    shown = display_text(LONG)
    assert len(shown.replace("\u200b", "")) == MAX_CHARS and shown.endswith("\u2026")
    assert max(len(run) for run in shown.replace("\u200b", " ").split()) <= 24
    assert display_text("short message") == "short message"


WIDGETS = [EmbedWidget, TissueWidget, SimilarityWidget, EvaluateWidget, AttentionWidget]


@pytest.mark.parametrize("cls", WIDGETS)
def test_a_long_message_does_not_widen_the_window(cls, make_napari_viewer, qtbot):
    viewer = make_napari_viewer(show=True)
    window = viewer.window._qt_window
    window.resize(1200, 800)
    widget = cls(viewer)
    viewer.window.add_dock_widget(widget, area="right")
    labels = [w for w in widget if isinstance(w, StatusLabel)]
    assert widget.runner.status in labels  # the TaskRunner's status line is one
    qtbot.wait(50)
    width = window.width()
    for label in labels:
        label.value = LONG
    qtbot.wait(100)
    assert window.width() == width  # before: 5,195 px for one such message
    assert labels[0].value == LONG and labels[0].native.toolTip() == LONG  # nothing lost
    assert labels[0].native.wordWrap()


def test_the_tile_search_summary_gets_the_lines_it_wraps_to(
    make_napari_viewer, qtbot, cmu_svs, tiny_vit, open_slide, wait_for
):
    """Found driving the Embed widget docked under the Tissue widget: after a tile click the tile search's summary
    ("tile 5: 10 tiles with cosine >= 0.800", the only place the threshold's value shows) wrapped to two lines
    but kept the height of one, its second line hidden under the "export" row. Each wrapped label now holds the
    height its text needs at its width."""
    viewer = make_napari_viewer(show=True)
    viewer.window._qt_window.resize(1500, 1000)
    slide = open_slide(viewer, cmu_svs)
    viewer.window.add_dock_widget(TissueWidget(viewer), name="Tissue")
    widget = EmbedWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Embed")
    widget.model.set_model(tiny_vit)
    widget.tile_px.value, widget.mpp.value, widget.min_tissue.value = tiny_vit.spec.tile_px, 2.0, 0.1
    widget.slide.value = slide
    widget.run()
    wait_for(widget)
    widget.search_tile(1, viewer.layers[f"{slide.name} clusters"])
    qtbot.wait(300)
    label = widget.search.summary
    q = label.native
    assert q.heightForWidth(q.width()) > 1.5 * q.fontMetrics().height()  # it wraps at this dock's width
    assert q.height() >= q.heightForWidth(q.width()), (label.value, q.height(), q.width())


def test_a_wrapped_label_shrinks_back_to_one_line(make_napari_viewer, qtbot):
    """The height a label holds for a long message is let go when a short one follows (QLabel's height-for-width
    is at least its minimum height, so a label fitted to its own answer would never shrink)."""
    viewer = make_napari_viewer(show=True)
    widget = TissueWidget(viewer)
    viewer.window.add_dock_widget(widget, area="right")
    label = widget.status
    q = label.native
    label.value = "short"
    qtbot.wait(50)
    one = q.height()
    label.value = LONG
    qtbot.wait(50)
    assert q.height() >= q.heightForWidth(q.width()) > 3 * one
    label.value = "short again"
    qtbot.wait(50)
    assert (q.height(), q.minimumHeight(), q.heightForWidth(q.width())) == (one, one, one)
