"""Which samples of a TIFF page are colour and which one is alpha (PhotometricInterpretation, ExtraSamples).

A decoded tile has ``SamplesPerPixel`` samples: the colour ones of its photometric interpretation (1 grey, 3 RGB;
JPEG YCbCr decodes to RGB), then extra samples. Alpha is the one ExtraSamples marks associated (premultiplied:
composited here) or unassociated, else, on an RGB page, the first extra sample (as libtiff, and so OpenSlide, read
it); other extra samples are left out. MinIsWhite grey is inverted. A greyscale page with two or more further
samples (a multi-channel image stored as one page) and palette, CMYK or CIELab pages are refused: shown as RGB
they would be wrong colours.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from napari_pathdistill.errors import WSIError

#: colour samples of the photometric interpretations read here: MinIsWhite, MinIsBlack, RGB, YCbCr
_COLOUR_SAMPLES = {0: 1, 1: 1, 2: 3, 6: 3}
_NAMES = {3: "palette (colour-map)", 5: "CMYK (separated)", 8: "CIELab", 9: "ICCLab", 10: "ITULab"}
_ALPHA = (1, 2)  # ExtraSamples: associated (premultiplied) and unassociated alpha


@dataclass(frozen=True)
class SampleLayout:
    """Which samples of a decoded (h, w[, s]) block are shown: colour ones, then alpha if any."""

    colour: tuple[int, ...]
    alpha: int | None = None
    premultiplied: bool = False  # associated alpha: colour already multiplied by alpha
    invert: bool = False  # MinIsWhite: 0 is white

    def apply(self, block: np.ndarray, background: tuple[int, int, int]) -> np.ndarray:
        """(h, w[, s]) decoded samples -> (h, w[, c (+ 1 unassociated alpha)]) for ``to_rgb``.

        Premultiplied alpha is composited here (``c + bg (1 - a)``), as ``to_rgb`` takes unassociated alpha.
        """
        if block.ndim == 2:
            return np.iinfo(block.dtype).max - block if self.invert else block
        colour = block[..., list(self.colour)]
        if self.invert:
            colour = np.iinfo(block.dtype).max - colour
        if self.alpha is None:
            return colour
        alpha = block[..., self.alpha : self.alpha + 1]
        if not self.premultiplied:
            return np.concatenate([colour, alpha], axis=-1)
        top = int(np.iinfo(block.dtype).max)
        bg = (np.asarray(background[: len(self.colour)], np.int64) * top + 127) // 255
        out = colour.astype(np.int64) + (bg * (top - alpha.astype(np.int64)) + top // 2) // top
        return np.minimum(out, top).astype(block.dtype)


def sample_layout(path: Path | str, page: Any) -> SampleLayout:
    """The :class:`SampleLayout` of a tifffile page.

    The first extra sample of an RGB page is alpha also when ExtraSamples says "unspecified" (associated, as
    libtiff and so OpenSlide read it: writers that omit the kind mean alpha).

    Raises:
        WSIError: a palette, CMYK or Lab page, fewer samples than its colour needs, or a greyscale page with
            two or more further samples (a multi-channel image, not brightfield).
    """
    name, photometric, samples = Path(path).name, int(page.photometric), int(page.samplesperpixel)
    n_colour = _COLOUR_SAMPLES.get(photometric)
    if n_colour is None:
        kind = _NAMES.get(photometric, f"photometric interpretation {photometric}")
        raise WSIError(f"{name}: {kind} TIFF images are not supported; save it as RGB (or greyscale).")
    if samples < n_colour:
        raise WSIError(f"{name}: an RGB TIFF page with {samples} sample(s) per pixel; the file is damaged.")
    extras = tuple(int(e) for e in (page.extrasamples or ()))[: samples - n_colour]
    extras += (0,) * (samples - n_colour - len(extras))
    alpha = next((i for i, e in enumerate(extras) if e in _ALPHA), None)
    if alpha is None and n_colour == 3 and extras:
        alpha = 0  # unspecified: libtiff's associated alpha
    if n_colour == 1 and samples > 2:
        raise WSIError(
            f"{name}: a greyscale TIFF page with {samples} samples per pixel (channels, not RGB): a multi-channel "
            "image stored as one page. Save it as an OME-TIFF with one page per channel to see its channels, or "
            "as RGB."
        )
    return SampleLayout(
        colour=tuple(range(n_colour)),
        alpha=None if alpha is None else n_colour + alpha,
        premultiplied=alpha is not None and extras[alpha] != 2,
        invert=photometric == 0,
    )
