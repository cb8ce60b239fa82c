"""Tissue detection on a low-resolution RGB image of a slide (pure numpy / scipy / scikit-image, no Qt).

Optical density on all three channels, relative to the glass colour and smoothed over ~8 um (so pale IHC and
high-magnification crops count, not only saturated H&E), AND some texture (flat grey glass is not tissue) AND,
per connected object, some colour (a black cover-slip line is not tissue; a near-black DAB nucleus inside
stained tissue is), then closing, removal of small objects and hole filling.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage as ndi
from skimage import morphology

from napari_pathdistill.wsi.pyramid import Pyramid

__all__ = [
    "TISSUE_SMOOTH_UM",
    "TissueMaps",
    "TissueMask",
    "background_rgb",
    "detect_tissue",
    "mask_from_maps",
    "tissue_maps",
    "tissue_mask_from_rgb",
    "tissue_smooth_px",
]


@dataclass
class TissueMask:
    """A tissue mask on a low-resolution image.

    Attributes:
        mask: (h, w) bool.
        downsample: level-0 pixels per mask pixel.
    """

    mask: np.ndarray
    downsample: float


@dataclass
class TissueMaps:
    """Per-pixel evidence of tissue on a low-resolution RGB image (see :func:`tissue_maps`).

    Attributes:
        density: (h, w) float32 optical density summed over R, G, B relative to the glass colour, smoothed.
        texture: (h, w) float32 local standard deviation of the (unsmoothed) density in the same window.
        stain_ratio: (h, w) float32 (max - min) / sum of the smoothed per-channel densities: ~0 for grey or
            black (dust, a cover-slip edge, out-of-focus glass), > 0.1 for H&E, haematoxylin and DAB.
        background: (3,) float glass colour the densities are relative to.
    """

    density: np.ndarray
    texture: np.ndarray
    stain_ratio: np.ndarray
    background: np.ndarray


def background_rgb(rgb: np.ndarray) -> np.ndarray:
    """(3,) glass colour of an (h, w, 3) image: per-channel median of its brightest 5 % of pixels.

    Pure white (unscanned areas, all channels >= 254) is ignored; each channel is floored at 200 so an image
    that is all tissue is not measured against its own palest tissue.
    """
    f = np.asarray(rgb, dtype=np.float32).reshape(-1, 3)
    f = f[f.min(axis=1) < 254]
    if len(f) < 64:
        return np.full(3, 255.0)
    bright = f.mean(axis=1)
    top = f[bright >= np.percentile(bright, 95)]
    return np.clip(np.median(top, axis=0), 200.0, 255.0)


def _block_mean(a: np.ndarray, k: int) -> np.ndarray:
    """Mean over k x k blocks of an (h, w, C) array (edge blocks padded by reflection)."""
    h, w = a.shape[:2]
    if -h % k or -w % k:
        a = np.pad(a, ((0, -h % k), (0, -w % k), (0, 0)), mode="reflect")
    hb, wb, c = a.shape[0] // k, a.shape[1] // k, a.shape[2]
    cols = a.reshape(a.shape[0], wb, k, c).sum(axis=2)  # contiguous reductions: much faster than axis=(1, 3)
    return cols.reshape(hb, k, wb, c).sum(axis=1) / (k * k)


def tissue_maps(rgb: np.ndarray, smooth_px: float = 2.0) -> TissueMaps:
    """Optical-density evidence of tissue on all three channels (see :class:`TissueMaps`).

    Wide windows are computed on k x k block means (k ~ sigma / 3; exact first and second moments) and the maps
    resized back bilinearly, so an 8 um window on a 0.25 um/px thumbnail costs what a small one does.

    Args:
        rgb: (h, w, 3) or (h, w, 4) uint8 (alpha composited on white first).
        smooth_px: Gaussian sigma (px) of the window; ``detect_tissue`` sets it to 8 um on the thumbnail so
            cells merge into tissue at any magnification.
    """
    from napari_pathdistill.wsi._backend_utils import to_rgb

    f = to_rgb(np.asarray(rgb)).astype(np.float32)
    bg = background_rgb(f).astype(np.float32)
    od = np.maximum(-np.log10(np.maximum(f, 1.0) / bg), 0.0)
    sigma = max(float(smooth_px), 0.0)
    k = max(1, int(sigma // 3))
    total = od.sum(axis=2)
    moments = np.concatenate([od, (total * total)[..., None]], axis=2)
    if k > 1:
        moments = _block_mean(moments, k)
    if sigma > 0:
        moments = ndi.gaussian_filter(moments, (sigma / k, sigma / k, 0))
    per_channel, second = moments[..., :3], moments[..., 3]
    density = per_channel.sum(axis=2)
    texture = np.sqrt(np.maximum(second - density * density, 0.0))
    ratio = (per_channel.max(axis=2) - per_channel.min(axis=2)) / np.maximum(density, 1e-6)
    maps = [density, texture, ratio]
    if k > 1:  # back to the image's pixels: block centres at (j + 0.5) k - 0.5
        h, w = f.shape[:2]
        yy = (np.arange(h, dtype=np.float32) + 0.5) / k - 0.5
        xx = (np.arange(w, dtype=np.float32) + 0.5) / k - 0.5
        grid = np.meshgrid(yy, xx, indexing="ij")
        maps = [ndi.map_coordinates(m, grid, order=1, mode="nearest") for m in maps]
    density, texture, ratio = (m.astype(np.float32) for m in maps)
    return TissueMaps(density, texture, ratio, bg)


def mask_from_maps(
    maps: TissueMaps,
    *,
    threshold: float = 0.08,
    min_texture: float = 0.02,
    min_stain_ratio: float = 0.04,
    closing_radius: int = 2,
    min_object_frac: float = 1e-3,
) -> np.ndarray:
    """Threshold :class:`TissueMaps` into a (h, w) bool mask, then closing, small objects and holes.

    Args:
        maps: from :func:`tissue_maps`.
        threshold: minimum smoothed optical density (sum over RGB, relative to glass; glass ~ 0.03, pale IHC
            counterstain 0.1-0.3, H&E 0.5-1.5). The tissue widget previews it.
        min_texture: minimum local standard deviation of the density (flat grey glass has ~ 0.005).
        min_stain_ratio: minimum mean colour of the density over a connected object (a grey or black mark,
            e.g. a cover-slip edge, is not tissue; a near-black DAB nucleus within stained tissue is).
        closing_radius: radius (px) of the binary closing disk.
        min_object_frac: objects and holes smaller than this fraction of the image are removed / filled.
    """
    mask = (maps.density >= threshold) & (maps.texture >= min_texture)
    if closing_radius > 0:
        mask = morphology.closing(mask, morphology.disk(closing_radius)).astype(bool)
    labels, n = ndi.label(mask)
    if n:  # per object, not per pixel: near-black DAB nuclei inside stained tissue stay tissue
        colour = ndi.mean(maps.stain_ratio, labels, np.arange(1, n + 1))
        mask = np.concatenate([[False], np.asarray(colour) >= min_stain_ratio])[labels]
    min_size = max(1, int(min_object_frac * mask.size))
    mask = morphology.remove_small_objects(mask, max_size=min_size)
    return ndi.binary_fill_holes(mask) | morphology.remove_small_holes(mask, max_size=min_size)


def tissue_mask_from_rgb(rgb: np.ndarray, *, smooth_px: float = 2.0, **kw: Any) -> np.ndarray:
    """Tissue mask of an RGB image: optical density on all channels relative to glass (``tissue_maps``).

    Works on H&E and on pale IHC (blue counterstain, brown DAB), at low and at high magnification; ``kw`` go
    to :func:`mask_from_maps` (``threshold``, ``min_texture``...).

    Returns:
        (h, w) bool mask, True on tissue.
    """
    return mask_from_maps(tissue_maps(rgb, smooth_px), **kw)


#: physical width (um) of the tissue-detection window: a few cells, so a cell's pale cytoplasm counts as tissue
TISSUE_SMOOTH_UM = 8.0


def tissue_smooth_px(pyramid: Pyramid, downsample: float) -> float:
    """Window sigma (thumbnail px) of ``TISSUE_SMOOTH_UM`` on a thumbnail of ``downsample`` (2 px without MPP)."""
    if not pyramid.mpp:
        return 2.0
    return max(1.0, TISSUE_SMOOTH_UM / (float(np.mean(pyramid.mpp)) * downsample))


def detect_tissue(
    pyramid: Pyramid, max_size: int = 2048, *, thumbnail: tuple[np.ndarray, float] | None = None, **kw: Any
) -> TissueMask:
    """Tissue mask on a thumbnail of at most ``max_size`` px (longer side); ``kw`` go to :func:`mask_from_maps`.

    ``thumbnail``: the (image, downsample) of ``pyramid.thumbnail`` when the caller already has it (it is the
    slow part on a large slide), instead of reading it again.
    """
    thumb, ds = thumbnail if thumbnail is not None else pyramid.thumbnail(max_size)
    maps = tissue_maps(thumb, tissue_smooth_px(pyramid, ds))
    return TissueMask(mask=mask_from_maps(maps, **kw), downsample=ds)
