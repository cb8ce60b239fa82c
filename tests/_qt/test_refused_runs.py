"""A run refused before it starts (no slide chosen) says so in the dock's status line as well as in its
notification. The Tissue, Attention and Similarity docks only notified: their status kept the previous run's
'done' next to the new error (Embed and Evaluate already set it)."""

from __future__ import annotations

import pytest

from napari_pathdistill._qt.attention_widget import AttentionWidget
from napari_pathdistill._qt.similarity_widget import SimilarityWidget
from napari_pathdistill._qt.tissue_widget import TissueWidget

pytestmark = pytest.mark.napari

NO_SLIDE = "No slide chosen: open a whole-slide image"


@pytest.mark.parametrize(
    ("cls", "start"),
    [(TissueWidget, "run"), (TissueWidget, "start_preview"), (TissueWidget, "show_associated"),
     (AttentionWidget, "run"), (SimilarityWidget, "run")],
)  # fmt: skip
def test_a_refused_run_replaces_the_previous_status(make_napari_viewer, errors, cls, start) -> None:
    widget = cls(make_napari_viewer())
    widget.status.value = "done (the previous run's)"
    getattr(widget, start)()
    assert len(errors) == 1 and errors[0].startswith(NO_SLIDE)
    assert widget.status.value == errors[0]
