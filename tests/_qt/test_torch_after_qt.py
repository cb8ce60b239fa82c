"""Docking a torch widget from a plain napari session: Qt/OpenGL start first, torch is imported afterwards.

Runs in a fresh interpreter, since pytest's own process may already hold torch. Without
``napari_pathdistill._native.preload_triton`` this segfaults under Xvfb/Mesa (triton's LLVM vs Mesa's).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent(
    """
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
)


@pytest.mark.napari
def test_torch_widget_after_qt_in_fresh_process() -> None:
    proc = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"rc={proc.returncode}\n{proc.stdout}\n{proc.stderr[-3000:]}"
    assert "ok (1, 48)" in proc.stdout
