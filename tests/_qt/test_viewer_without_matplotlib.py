"""The Embed widget's dock and its similarity colours do not import matplotlib.

Found by the peak-RSS probes of the slide-scale benchmark (docs/benchmarks.md, 2026-12-07): the cluster palette
(at the dock's opening) and the heatmap's magma (at the first click) each imported matplotlib for a colour table,
~12 MB resident and 46 modules in a session that never draws a plot. Runs in a fresh interpreter (pytest's own
process may hold matplotlib already). The colours themselves: napari's magma table is matplotlib's, sampled as
matplotlib samples it.
"""

from __future__ import annotations

import numpy as np
import pytest

from _fresh_process import run_code

SCRIPT = """
import sys
import napari
from napari_pathdistill._qt.embed_widget import EmbedWidget
from napari_pathdistill._qt.tile_search import points_colormap, threshold_colormap
viewer = napari.Viewer(show=False)
widget = EmbedWidget(viewer)  # builds the cluster palette (warm_labels_layer)
threshold_colormap(), points_colormap()
print("matplotlib imported:", "matplotlib" in sys.modules)
viewer.close()
"""


@pytest.mark.napari
def test_embed_dock_and_heatmap_colours_do_not_import_matplotlib() -> None:
    proc = run_code(SCRIPT)
    assert "matplotlib imported: False" in proc.stdout


def test_magma_samples_equal_matplotlib() -> None:
    import matplotlib
    from napari.utils.colormaps import ensure_colormap

    from napari_pathdistill._qt.tile_search import _magma_samples, points_colormap

    x = np.r_[np.linspace(0.15, 1.0, 64), 0.0, 0.5, 1.0]
    ours = _magma_samples(ensure_colormap("magma").colors, x)
    theirs = np.asarray(matplotlib.colormaps["magma"](x), dtype=np.float32)
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-7)  # napari's table is matplotlib's, in float32
    np.testing.assert_allclose(points_colormap().colors[1:], theirs[:64], rtol=0, atol=1e-7)
