"""What the attention widget draws and writes: its colormap, the level-0 box the camera shows, the tile centres
its hover points sit on, and the agreement text and per-tile r histogram under the maps."""

from __future__ import annotations

import napari
import numpy as np
from napari.utils.colormaps import Colormap

from napari_pathdistill.inference.attention_pairs import AttentionPair

BARS = " \u2581\u2582\u2583\u2584\u2585\u2586\u2587\u2588"


def attention_colormap() -> Colormap:
    """Transparent below the region's median, then teal -> green -> yellow with opacity rising to 0.9.

    The maps are percentile ranks, so only the more attended half of the region is tinted and the H&E stays
    readable under it; the top 10 % (ranks > 0.9) are the yellow, most opaque part.
    """
    t = np.array([0.0, 0.5, 0.7, 0.9, 1.0])
    rgb = np.array(
        [[0.13, 0.57, 0.55], [0.13, 0.57, 0.55], [0.37, 0.79, 0.38], [0.99, 0.91, 0.14], [1.0, 0.8, 0.0]]
    )
    alpha = np.array([0.0, 0.0, 0.4, 0.75, 0.9])
    return Colormap(np.c_[rgb, alpha], controls=t, name="attention rank (transparent below median)")


def view_bbox_level0(
    viewer: napari.viewer.Viewer, layer: napari.layers.Image
) -> tuple[float, float, float, float]:
    """What one grid cell of the canvas shows of ``layer``, from the camera: (x0, y0, x1, y1) in level-0 px.

    The camera's centre and zoom (screen px per world unit) and the size of one viewbox (the canvas, or a grid
    cell in grid mode) give the world rectangle on screen; the layer's transform takes it to level-0 pixels.
    """
    scene = getattr(viewer, "scene", None)  # napari >= 0.9; viewer.camera before (deprecated since)
    camera = scene.camera if scene is not None else viewer.camera
    cy, cx = np.asarray(camera.center, dtype=float)[-2:]
    h, w = np.asarray(_viewbox_size(viewer), dtype=float)
    half_y, half_x = h / 2 / camera.zoom, w / 2 / camera.zoom
    lo = np.asarray(layer.world_to_data([cy - half_y, cx - half_x]))[-2:]
    hi = np.asarray(layer.world_to_data([cy + half_y, cx + half_x]))[-2:]
    (y0, y1), (x0, x1) = sorted((lo[0], hi[0])), sorted((lo[1], hi[1]))
    return float(x0), float(y0), float(x1), float(y1)


def _viewbox_size(viewer: napari.viewer.Viewer) -> tuple[float, float]:
    """(h, w) screen px of one viewbox: the canvas, or one grid cell in grid mode."""
    canvas = getattr(viewer, "canvas", None)
    if canvas is not None and hasattr(canvas, "viewbox_size"):
        return tuple(canvas.viewbox_size(viewer.layers))  # type: ignore[return-value]
    size = np.asarray(viewer._canvas_size, dtype=float)  # older napari
    if viewer.grid.enabled:
        size = size / np.asarray(viewer.grid.actual_shape(len(viewer.layers)))
    return float(size[0]), float(size[1])


def r_histogram(counts: np.ndarray, edges: np.ndarray) -> str:
    """One line of bars for a histogram of per-tile r, e.g. ``r -1 [ ▁▃█▅▂ ] +1``."""
    top = counts.max() if counts.size and counts.max() > 0 else 1
    bars = "".join(BARS[int(np.ceil(c / top * (len(BARS) - 1)))] for c in counts)
    return f"per-tile r  {edges[0]:+.0f} [{bars}] {edges[-1]:+.0f}  ({int(counts.sum())} tiles)"


#: (p99 - p1) / max(|p1|, |p99|) of a raw map below which it is called flat: a random-init ViT's last-block
#: attention is uniform to 1e-4 (1e-5 for the tiny test ViTs), trained students' and Grad-CAM maps spread ~1
FLAT_SPREAD = 0.01


def relative_spread(lo: float, hi: float) -> float:
    """(hi - lo) relative to the larger magnitude (0 for an all-zero map)."""
    top = max(abs(lo), abs(hi))
    return (hi - lo) / top if top > 0 else 0.0


def agreement_text(pair: AttentionPair) -> str:
    """What the agreement numbers are and what they mean."""
    r, ov = pair.tile_r[np.isfinite(pair.tile_r)], pair.tile_overlap[np.isfinite(pair.tile_overlap)]
    med_r = f"{np.median(r):.2f}" if r.size else "n/a"
    med_ov = f"{np.median(ov):.2f}" if ov.size else "n/a"
    pct = f"{100 * pair.top_frac:.0f} %"
    n = len(pair.coords)
    tiles = f"{n:,} tiles."
    if pair.region_tiles > n:
        tiles = (f"{n:,} of the region's {pair.region_tiles:,} tissue tiles: 'max tiles' kept those nearest its "
                 "centre (raise it for all).")  # fmt: skip
    scale = "".join(
        f"The {src.role} saw the tiles at {src.fed_mpp:.2f} um/px, {ratio:.1f}x its own {src.own_mpp:.2f}: its "
        f"map is not the one it makes at its own magnification. "
        for src in pair.sources
        if (ratio := src.off_scale()) is not None
    )
    flat = "".join(
        f"The {src.role}'s map is flat (raw p1-p99 {lo:.4g}-{hi:.4g}, {100 * spread:.2g} % apart, e.g. a random-init "
        "ViT's uniform attention): its ranks and colours show noise, not where it looks. "
        for src, (lo, hi) in zip(pair.sources, pair.percentiles, strict=True)
        if (spread := relative_spread(lo, hi)) < FLAT_SPREAD
    )
    return (
        f"{scale}{tiles} {flat}Pearson r of the two maps: whole map {pair.overall_r:.2f}, per tile median "
        f"{med_r} (1 = same layout, 0 = unrelated, < 0 = opposite). Top-{pct} overlap (share of the most attended "
        f"{pct} of one map in the other's): whole map {pair.overall_overlap:.2f}, per tile median {med_ov} "
        f"(chance = {pair.top_frac:.2f}, 1 = same hot spots). Compare with a random-init side for the baseline. "
        "Colours (colour bars): each pixel's percentile rank in the region on its own map, 0-1; transparent below "
        "0.5, yellow = top 10 %."
    )


def tile_centres(pair: AttentionPair) -> np.ndarray:
    """(N, 2) tile centres (y, x) in level-0 px: the slide layer's data frame (the points layer takes that
    layer's scale and translate, so it lies on the slide wherever it sits); hover shows each tile's r."""
    centre = pair.coords + pair.tile_px_level0 / 2 - 0.5
    return centre[:, ::-1]
