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
