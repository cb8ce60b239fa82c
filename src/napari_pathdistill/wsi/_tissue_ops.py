"""Array helpers of tissue detection (``wsi.tissue``) whose temporaries stay a few bytes per pixel: optical
density by table look-up, k x k block means and their bilinear resampling back, per-label statistics and
look-ups over row bands (int32 labels are never copied to int64 at once).
"""

from __future__ import annotations

import numpy as np

__all__ = ["block_mean", "border_labels", "is_grey", "label_sums", "lookup", "od_channels", "upsample"]


def is_grey(rgb: np.ndarray) -> bool:
    """Whether an (h, w, 3) image is greyscale (R = G = B everywhere: a one-sample slide shown as RGB), row by row."""
    return all(np.array_equal(row[:, 0], row[:, 1]) and np.array_equal(row[:, 1], row[:, 2]) for row in rgb)


def block_mean(a: np.ndarray, k: int) -> np.ndarray:
    """Mean over k x k blocks of an (h, w) array (edge blocks padded by reflection)."""
    h, w = a.shape
    if -h % k or -w % k:
        a = np.pad(a, ((0, -h % k), (0, -w % k)), mode="reflect")
    hb, wb = a.shape[0] // k, a.shape[1] // k
    cols = a.reshape(a.shape[0], wb, k).sum(axis=2)  # contiguous reductions: much faster than axis=(1, 3)
    return cols.reshape(hb, k, wb).sum(axis=1) / np.float32(k * k)


def _linear_weights(n_out: int, n_in: int, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(i0, i1, w) to resample n_in block centres at (j + 0.5) k - 0.5 back to n_out pixels (edges clamped)."""
    c = np.clip((np.arange(n_out, dtype=np.float64) + 0.5) / k - 0.5, 0, n_in - 1)
    i0 = np.floor(c).astype(np.intp)
    return i0, np.minimum(i0 + 1, n_in - 1), (c - i0).astype(np.float32)


def upsample(m: np.ndarray, k: int, shape: tuple[int, int]) -> np.ndarray:
    """Bilinear resampling of block means ``m`` back to ``shape`` (= map_coordinates order 1, mode nearest),
    separable, so its temporaries are two (h, w) float32 arrays, not an (2, h, w) coordinate grid."""
    y0, y1, wy = _linear_weights(shape[0], m.shape[0], k)
    x0, x1, wx = _linear_weights(shape[1], m.shape[1], k)
    rows = m[y0] * (1 - wy)[:, None] + m[y1] * wy[:, None]
    out = rows[:, x0]
    out *= 1 - wx
    tmp = rows[:, x1]
    tmp *= wx
    out += tmp
    return out


def od_channels(rgb: np.ndarray, bg: np.ndarray) -> list[np.ndarray]:
    """Three (h, w) float32 optical densities of a uint8 image, max(-log10(max(v, 1) / bg), 0), by table look-up
    in row bands (no float copy of the image)."""
    v = np.maximum(np.arange(256, dtype=np.float32), 1.0)
    lut = np.maximum(-np.log10(v[None, :] / bg[:, None].astype(np.float32)), 0.0).astype(np.float32)
    od = [np.empty(rgb.shape[:2], np.float32) for _ in range(3)]
    step = _bands(rgb.shape).step
    for y in _bands(rgb.shape):
        for c in range(3):
            np.take(lut[c], rgb[y : y + step, :, c], out=od[c][y : y + step])
    return od


#: pixels per band of the label statistics (bounds their int64 / float64 temporaries)
_BAND_PIXELS = 1 << 20


def _bands(shape: tuple[int, ...]) -> range:
    return range(0, shape[0], max(1, _BAND_PIXELS // max(1, int(np.prod(shape[1:])))))


def label_sums(
    labels: np.ndarray, n: int, weights: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(pixel count, sum of ``weights``) per label 0..n-1, as float64, accumulated over row bands."""
    counts, sums = np.zeros(n), np.zeros(n)
    step = _bands(labels.shape).step
    for y in _bands(labels.shape):
        lab = labels[y : y + step].ravel()
        counts += np.bincount(lab, minlength=n)
        if weights is not None:
            sums += np.bincount(lab, weights=weights[y : y + step].ravel(), minlength=n)
    return counts, sums


def lookup(table: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """``table[labels]`` over row bands (the int32 labels are not copied to int64 at once)."""
    out = np.empty(labels.shape, table.dtype)
    step = _bands(labels.shape).step
    for y in _bands(labels.shape):
        np.take(table, labels[y : y + step], out=out[y : y + step])
    return out


def border_labels(labels: np.ndarray) -> np.ndarray:
    """Labels present on the image border."""
    return np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
