"""Tissue detection on a low-resolution RGB image of a slide (pure numpy / scipy / scikit-image, no Qt).

Optical density on all three channels, relative to the glass colour and smoothed over ~8 um (so pale IHC and
high-magnification crops count, not only saturated H&E), AND some texture (flat grey glass is not tissue) AND,
per connected object, some colour (a black cover-slip line is not tissue; a near-black DAB nucleus inside
stained tissue is), then closing, removal of small objects and hole filling.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage as ndi
from skimage import morphology

from napari_pathdistill.wsi._tissue_ops import (
    block_mean,
    border_labels,
    is_grey,
    label_sums,
    lookup,
    od_channels,
    upsample,
)
from napari_pathdistill.wsi.pyramid import Pyramid

__all__ = [
    "MAX_DETECTION_PIXELS",
    "TISSUE_SMOOTH_UM",
    "TissueMaps",
    "TissueMask",
    "background_rgb",
    "bound_thumbnail",
    "detect_tissue",
    "detection_side",
    "detection_thumbnail",
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
        greyscale: the image has no colour at all (a one-sample slide): ``stain_ratio`` is 0 on its tissue too.
    """

    density: np.ndarray
    texture: np.ndarray
    stain_ratio: np.ndarray
    background: np.ndarray
    greyscale: bool = False


def background_rgb(rgb: np.ndarray) -> np.ndarray:
    """(3,) glass colour of an (h, w, 3) image: per-channel median of its brightest 5 % of pixels.

    Pure white (unscanned areas, all channels >= 254) is ignored; each channel is floored at 200 so an image
    that is all tissue is not measured against its own palest tissue. On uint8 the 95th percentile of the
    brightness comes from a histogram of the channel sums (2-3 bytes per pixel, no float copy of the image).
    """
    a = np.asarray(rgb)
    if a.dtype != np.uint8:
        a = np.clip(np.rint(a.astype(np.float32)), 0, 255).astype(np.uint8)
    a = a.reshape(-1, a.shape[-1])[:, :3]
    keep = a.min(axis=1) < 254
    n = int(keep.sum())
    if n < 64:
        return np.full(3, 255.0)
    total = a[:, 0].astype(np.uint16)
    total += a[:, 1]
    total += a[:, 2]
    cum = np.cumsum(np.bincount(total[keep], minlength=766))
    rank = 0.95 * (n - 1)  # np.percentile's linear interpolation between the order statistics lo and lo + 1
    lo = int(np.floor(rank))
    s_lo, s_hi = (int(np.searchsorted(cum, i, side="right")) for i in (lo, min(lo + 1, n - 1)))
    cut = s_lo if (rank == lo or s_lo == s_hi) else s_hi
    keep &= total >= cut
    return np.clip(np.median(a[keep], axis=0), 200.0, 255.0)


def _smooth(planes: list[np.ndarray], sigma: float, k: int) -> list[np.ndarray]:
    """Gaussian of ``sigma`` px on each (h, w) plane: in place, or on k x k block means when k > 1."""
    if k > 1:
        planes = [block_mean(p, k) for p in planes]
    if sigma > 0:
        for p in planes:
            ndi.gaussian_filter(p, sigma / k, output=p)
    return planes


def tissue_maps(rgb: np.ndarray, smooth_px: float = 2.0) -> TissueMaps:
    """Optical-density evidence of tissue on all three channels (see :class:`TissueMaps`).

    Wide windows are computed on k x k block means (k ~ sigma / 3; exact first and second moments) and the maps
    resized back bilinearly, so an 8 um window on a 0.25 um/px thumbnail costs what a small one does. Memory:
    about 28 bytes per pixel beyond the uint8 image (float32 planes, smoothed in place), whatever ``smooth_px``.

    Args:
        rgb: (h, w, 3) or (h, w, 4) uint8 (alpha composited on white first).
        smooth_px: Gaussian sigma (px) of the window; ``detect_tissue`` sets it to 8 um on the thumbnail so
            cells merge into tissue at any magnification.
    """
    from napari_pathdistill.wsi._backend_utils import to_rgb

    img = to_rgb(np.asarray(rgb))
    bg = background_rgb(img).astype(np.float32)
    od = od_channels(img, bg)
    second = od[0] + od[1]
    second += od[2]
    second *= second
    sigma = max(float(smooth_px), 0.0)
    k = max(1, int(sigma // 3))
    if k > 1:
        od, second = _smooth(od, sigma, k), _smooth([second], sigma, k)[0]
    else:
        _smooth([*od, second], sigma, 1)
    maps = _maps_from_moments(od, second)
    if k > 1:  # back to the image's pixels: block centres at (j + 0.5) k - 0.5
        maps = (
            upsample(maps[0], k, img.shape[:2]),
            upsample(maps[1], k, img.shape[:2]),
            upsample(maps[2], k, img.shape[:2]),
        )
    return TissueMaps(*maps, bg, is_grey(img))


def _maps_from_moments(od: list[np.ndarray], second: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(density, texture, stain ratio) from the smoothed per-channel densities and squared total; consumes
    (overwrites) ``od[0]`` and ``second``."""
    density = od[0] + od[1]
    density += od[2]
    sq = density * density
    second -= sq
    np.maximum(second, 0.0, out=second)
    texture = np.sqrt(second, out=second)
    lo = np.minimum(od[0], od[1], out=sq)
    np.minimum(lo, od[2], out=lo)
    ratio = np.maximum(od[0], od[1], out=od[0])
    np.maximum(ratio, od[2], out=ratio)
    ratio -= lo
    ratio /= np.maximum(density, np.float32(1e-6), out=lo)
    return density, texture, ratio


#: default optical-density threshold of the tissue mask (widget, ``pathdistill tiles --threshold``, embedding)
TISSUE_THRESHOLD = 0.08


def mask_from_maps(
    maps: TissueMaps,
    *,
    threshold: float = TISSUE_THRESHOLD,
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
        min_stain_ratio: minimum mean colour of the density over a connected object (a grey or black cover-slip
            edge is not tissue, a near-black DAB nucleus in stained tissue is); none on a greyscale image.
        closing_radius: radius (px) of the binary closing disk.
        min_object_frac: objects and holes smaller than this fraction of the image are removed / filled.
    """
    mask = maps.density >= threshold
    mask &= maps.texture >= min_texture
    if closing_radius > 0:
        mask = morphology.closing(mask, morphology.disk(closing_radius)).astype(bool, copy=False)
    min_size = max(1, int(min_object_frac * mask.size))
    labels = np.empty(mask.shape, np.int32)  # one int32 label image serves objects, then holes
    n = ndi.label(mask, output=labels)
    counts, colour = label_sums(labels, n + 1, maps.stain_ratio)
    # per object, not per pixel: near-black DAB nuclei inside stained tissue stay tissue; then small objects
    keep = ((colour >= min_stain_ratio * counts) | maps.greyscale) & (counts > min_size)
    keep[0] = False
    mask = lookup(keep, labels)
    n = ndi.label(~mask, output=labels)  # holes: enclosed background, or small background at the border
    counts, _ = label_sums(labels, n + 1)
    fill = counts <= min_size
    fill[1:] |= ~np.isin(np.arange(1, n + 1), border_labels(labels))
    fill[0] = False
    return mask | lookup(fill, labels)


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
    return max(1.0, TISSUE_SMOOTH_UM / (float(np.mean(pyramid.mpp)) * downsample)) if pyramid.mpp else 2.0


#: most pixels of the image tissue detection works on (2048 x 2048): its memory, ~40 bytes per pixel, is bounded
#: by this whatever the slide's size (see :func:`detection_thumbnail`)
MAX_DETECTION_PIXELS = 2048 * 2048


def detection_side(pyramid: Pyramid, max_size: int = 2048) -> int:
    """Longer side (<= ``max_size``) of a thumbnail of the slide with at most ``MAX_DETECTION_PIXELS`` pixels."""
    h0, w0 = pyramid.levels[0].shape
    aspect = max(h0, w0) / max(1, min(h0, w0))
    return max(1, min(int(max_size), int(math.sqrt(MAX_DETECTION_PIXELS * aspect))))


def bound_thumbnail(pyramid: Pyramid, image: np.ndarray, downsample: float) -> tuple[np.ndarray, float]:
    """(image, downsample) box-reduced by the smallest integer factor that brings it to ``MAX_DETECTION_PIXELS``."""
    h, w = image.shape[:2]
    if h * w <= MAX_DETECTION_PIXELS:
        return image, downsample
    from PIL import Image

    from napari_pathdistill.wsi._backend_utils import to_rgb

    k = math.ceil(math.sqrt(h * w / MAX_DETECTION_PIXELS))
    while -(-h // k) * -(-w // k) > MAX_DETECTION_PIXELS:
        k += 1
    small = np.asarray(Image.fromarray(to_rgb(np.asarray(image))).reduce(k))
    h0, w0 = pyramid.levels[0].shape
    return small, (w0 / small.shape[1] + h0 / small.shape[0]) / 2.0


def detection_thumbnail(
    pyramid: Pyramid, max_size: int = 2048, check: Callable[[], None] | None = None
) -> tuple[np.ndarray, float]:
    """The slide's thumbnail for tissue detection: longer side <= ``max_size``, pixels <= ``MAX_DETECTION_PIXELS``.

    ``Pyramid.thumbnail`` reads its level block by block, so memory is about this image (12.6 MB at most) plus
    one block, whatever the slide's size.

    Returns:
        (image (h, w, 3) uint8, level-0 px per image px).
    """
    return pyramid.thumbnail(detection_side(pyramid, max_size), check)


def detect_tissue(
    pyramid: Pyramid,
    max_size: int = 2048,
    *,
    thumbnail: tuple[np.ndarray, float] | None = None,
    check: Callable[[], None] | None = None,
    **kw: Any,
) -> TissueMask:
    """Tissue mask on a thumbnail of at most ``max_size`` px (longer side); ``kw`` go to :func:`mask_from_maps`.

    The thumbnail has at most ``MAX_DETECTION_PIXELS`` pixels (a larger ``max_size`` or ``thumbnail`` is reduced
    to it), so peak memory (~40 bytes per thumbnail pixel, ~170 MB at most) does not grow with the slide.

    ``thumbnail``: the (image, downsample) of ``pyramid.thumbnail`` when the caller already has it (it is the
    slow part on a large slide), instead of reading it again.
    """
    thumb, ds = thumbnail if thumbnail is not None else detection_thumbnail(pyramid, max_size, check)
    thumb, ds = bound_thumbnail(pyramid, thumb, ds)
    maps = tissue_maps(thumb, tissue_smooth_px(pyramid, ds))
    return TissueMask(mask=mask_from_maps(maps, **kw), downsample=ds)
