"""The colours of k-means clusters, one palette for every view of them (pure core, no Qt).

The Embed widget's clusters layer and legend (``_qt._clusters``) and the QuPath GeoJSON classes
(``inference.qupath``) both take cluster c's colour from :func:`cluster_rgb`, so cluster 3 is the same colour in
napari and in QuPath.
"""

from __future__ import annotations

import numpy as np

#: matplotlib's qualitative tables tab20, tab20b and tab20c (Vega's category20 / 20b / 20c), 20 colours each, as
#: matplotlib defines them (byte / 255). Written out so that the viewer does not import matplotlib (~12 MB resident,
#: 46 modules) for 60 colours; ``tests/inference/test_palette_table.py`` checks them against matplotlib.
_TABLES = {
    "tab20": "1f77b4 aec7e8 ff7f0e ffbb78 2ca02c 98df8a d62728 ff9896 9467bd c5b0d5 "
    "8c564b c49c94 e377c2 f7b6d2 7f7f7f c7c7c7 bcbd22 dbdb8d 17becf 9edae5",
    "tab20b": "393b79 5254a3 6b6ecf 9c9ede 637939 8ca252 b5cf6b cedb9c 8c6d31 bd9e39 "
    "e7ba52 e7cb94 843c39 ad494a d6616b e7969c 7b4173 a55194 ce6dbd de9ed6",
    "tab20c": "3182bd 6baed6 9ecae1 c6dbef e6550d fd8d3c fdae6b fdd0a2 31a354 74c476 "
    "a1d99b c7e9c0 756bb1 9e9ac8 bcbddc dadaeb 636363 969696 bdbdbd d9d9d9",
}


def table(name: str) -> np.ndarray:
    """(20, 3) float64 RGB in [0, 1] of ``tab20``, ``tab20b`` or ``tab20c``, equal to matplotlib's."""
    return np.array([[int(h[i : i + 2], 16) / 255.0 for i in (0, 2, 4)] for h in _TABLES[name].split()])


def _base_palette() -> np.ndarray:
    """(60, 3) float RGB in [0, 1]: tab20 (its 10 dark shades, then the 10 light ones), then tab20b and tab20c
    by shade (their 10 darkest, ..., their 10 lightest)."""
    tab20, b, c = table("tab20"), table("tab20b"), table("tab20c")
    shades = [np.concatenate([b[s::4], c[s::4]]) for s in range(4)]  # 5 hues x 4 shades each
    return np.concatenate([tab20[0::2], tab20[1::2], *shades])


def cluster_rgb(k: int) -> np.ndarray:
    """(k, 3) float32 RGB in [0, 1] of clusters 1..k (row c - 1 is cluster c): the 60 colours of
    :func:`_base_palette`, repeated past 60."""
    base = _base_palette()
    return base[np.arange(max(k, 0)) % len(base)].astype(np.float32)


def cluster_rgb255(k: int) -> list[tuple[int, int, int]]:
    """:func:`cluster_rgb` as 0-255 integer (r, g, b) tuples (QuPath's ``classification.color``)."""
    rgb = np.round(cluster_rgb(k).astype(np.float64) * 255).astype(int)
    return [(int(r), int(g), int(b)) for r, g, b in rgb]
