"""Docking a torch widget from a plain napari session: Qt/OpenGL start first, torch is imported afterwards.

Runs in a fresh interpreter, since pytest's own process may already hold torch. Without
``napari_pathdistill._native.preload_triton`` this segfaults under Xvfb/Mesa (triton's LLVM vs Mesa's).
"""

from __future__ import annotations

import pytest

from _fresh_process import run_code

SCRIPT = """
import sys
import napari
viewer = napari.Viewer(show=False)
viewer.screenshot(canvas_only=True)  # OpenGL (and Mesa's LLVM under Xvfb) is loaded now
assert "torch" not in sys.modules
from napari_pathdistill._qt.embed_widget import EmbedWidget
from napari_pathdistill.models.testing import tiny_model
import numpy as np
widget = EmbedWidget(viewer)
emb = tiny_model().embed(np.zeros((1, 56, 56, 3), np.uint8))
print("ok", emb.shape)
viewer.close()
"""


@pytest.mark.napari
def test_torch_widget_after_qt_in_fresh_process() -> None:
    proc = run_code(SCRIPT)
    assert "ok (1, 48)" in proc.stdout
