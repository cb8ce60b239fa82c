"""The cluster palette's written-out tab20 / tab20b / tab20c tables are matplotlib's, colour for colour.

The palette used to ask matplotlib for them, which made the Embed widget import matplotlib (~12 MB resident, 46
modules) when its dock opened (found by the peak-RSS probes of the slide-scale benchmark, docs/benchmarks.md).
"""

from __future__ import annotations

import numpy as np
import pytest

from napari_pathdistill.inference.palette import cluster_rgb, table


@pytest.mark.parametrize("name", ["tab20", "tab20b", "tab20c"])
def test_tables_equal_matplotlib(name: str) -> None:
    import matplotlib

    ours = table(name)
    theirs = np.asarray(matplotlib.colormaps[name](np.arange(20))[:, :3])
    assert ours.shape == (20, 3)
    np.testing.assert_array_equal(ours, theirs)


def test_cluster_colours_are_the_tables_in_order() -> None:
    rgb = cluster_rgb(61)
    np.testing.assert_array_equal(rgb[:10], table("tab20")[0::2].astype(np.float32))  # the dark shades first
    np.testing.assert_array_equal(rgb[10:20], table("tab20")[1::2].astype(np.float32))
    np.testing.assert_array_equal(rgb[20:25], table("tab20b")[0::4].astype(np.float32))
    np.testing.assert_array_equal(rgb[60], rgb[0])  # repeated past 60
    assert len({tuple(c) for c in rgb[:60]}) == 60
