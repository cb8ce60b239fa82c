"""The colours of k-means clusters, one palette for every view of them (pure core, no Qt).

The Embed widget's clusters layer and legend (``_qt._clusters``) and the QuPath GeoJSON classes
(``inference.qupath``) both take cluster c's colour from :func:`cluster_rgb`, so cluster 3 is the same colour in
napari and in QuPath.
"""

from __future__ import annotations

import numpy as np


def _base_palette() -> np.ndarray:
    """(60, 3) float RGB in [0, 1]: matplotlib's tab20 (its 10 dark shades, then the 10 light ones), then
    tab20b and tab20c by shade (their 10 darkest, ..., their 10 lightest)."""
    import matplotlib

    def table(name: str) -> np.ndarray:
        return np.asarray(matplotlib.colormaps[name](np.arange(20))[:, :3])  # ListedColormaps of 20 colours

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
