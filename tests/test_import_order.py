"""The core can be imported in any order in a napari session: importing the inference core (torch, timm,
torchvision -> triton) after napari has started Qt and OpenGL, before any dock widget, used to segfault (Mesa's
llvmpipe LLVM and triton's own LLVM in one process). Each case runs in a fresh process."""

from __future__ import annotations

import pytest

from _fresh_process import run_code

pytestmark = pytest.mark.napari

SCRIPT = """
import napari
viewer = napari.Viewer(show=True)
import {module}
from napari_pathdistill._qt.embed_widget import EmbedWidget
viewer.window.add_dock_widget(EmbedWidget(viewer))
viewer.open({slide!r}, plugin="napari-pathdistill")
print("docked", len(viewer.layers))
viewer.close()
"""


@pytest.mark.parametrize(
    "module",
    ["napari_pathdistill.inference.embed", "napari_pathdistill.models", "napari_pathdistill.evaluation.plism",
     "napari_pathdistill.metrics.agreement", "napari_pathdistill.device"],
)  # fmt: skip
def test_core_imported_after_napari_started_opengl(module: str, cmu_svs) -> None:
    proc = run_code(
        SCRIPT.format(module=module, slide=str(cmu_svs)), flags=["-X", "faulthandler"], timeout=240
    )
    assert "docked 1" in proc.stdout
