"""Opt-in ICC profile -> sRGB conversion of decoded slide blocks (raw pixels stay the default).

A scanner's embedded ICC profile says what its RGB values mean; a viewer that ignores it shows the raw values
(as most WSI tools do, and as this package does by default). :class:`SRGBBackend` wraps a backend so that every
decoded block (dask chunk, ``read_region``, thumbnail) goes through one LittleCMS transform from the slide's
profile to PIL's built-in sRGB, built once with ``PIL.ImageCms.buildTransform`` and applied per block with
``applyTransform``; LittleCMS 2 transforms keep no state between calls, so the threads of dask and napari share
it. Associated images (label, macro) are passed through unchanged: the profile describes the scanned tissue.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np

from napari_pathdistill.errors import WSIError

__all__ = ["SRGBBackend", "SRGBTransform", "profile_description"]


def _open_profile(profile: bytes, what: str) -> Any:
    from PIL import ImageCms

    try:
        opened = ImageCms.ImageCmsProfile(io.BytesIO(profile))
    except (OSError, ImageCms.PyCMSError) as exc:
        raise WSIError(
            f"{what}: its embedded ICC profile ({len(profile):,} bytes) cannot be read ({exc}); the slide is "
            "shown with its raw colours."
        ) from exc
    space = opened.profile.xcolor_space.strip()
    if space != "RGB":
        raise WSIError(
            f"{what}: its embedded ICC profile describes {space or 'an unknown'} colour, not RGB; it cannot "
            "convert the slide's RGB pixels, which are shown raw."
        )
    return opened


def profile_description(profile: bytes | None) -> str | None:
    """The profile's description (e.g. ``'sRGB IEC61966-2.1'``), ``'unreadable'`` if broken, None if absent."""
    if not profile:
        return None
    from PIL import ImageCms

    try:
        return (
            ImageCms.getProfileDescription(ImageCms.ImageCmsProfile(io.BytesIO(profile))).strip() or "unnamed"
        )
    except (OSError, ImageCms.PyCMSError):
        return "unreadable"


class SRGBTransform:
    """RGB uint8 blocks from an ICC profile's colour space to sRGB (the profile's default rendering intent).

    Raises:
        WSIError: the profile cannot be read or is not an RGB profile (``what`` names the slide).
    """

    def __init__(self, profile: bytes, what: str = "slide") -> None:
        from PIL import ImageCms

        source = _open_profile(profile, what)
        intent = ImageCms.Intent(ImageCms.getDefaultIntent(source))
        self._transform = ImageCms.buildTransform(
            source, ImageCms.createProfile("sRGB"), "RGB", "RGB", intent
        )

    def __call__(self, block: np.ndarray) -> np.ndarray:
        """(h, w, 3) uint8 in the profile's space -> (h, w, 3) uint8 sRGB (a new array)."""
        from PIL import Image, ImageCms

        if block.size == 0:
            return np.array(block)
        image = Image.fromarray(np.ascontiguousarray(block, dtype=np.uint8), "RGB")
        out = ImageCms.applyTransform(image, self._transform)
        assert out is not None  # None only for inPlace=True
        return np.asarray(out)


class SRGBBackend:
    """A slide backend whose decoded pixels are converted to sRGB; everything else is delegated unchanged."""

    def __init__(self, backend: Any, transform: SRGBTransform) -> None:
        self._inner, self._transform = backend, transform
        self.name: str = backend.name
        self.levels = backend.levels
        self.mpp = backend.mpp
        self.properties = backend.properties

    def __getattr__(self, name: str) -> Any:  # icc_profile, background, vendor, ...
        return getattr(self._inner, name)

    def read_region(self, location: tuple[int, int], level: int, size: tuple[int, int]) -> np.ndarray:
        return self._transform(self._inner.read_region(location, level, size))

    def read_level(self, level: int, x: int, y: int, w: int, h: int) -> np.ndarray:
        return self._transform(self._inner.read_level(level, x, y, w, h))

    def associated_image_names(self) -> list[str]:
        return list(self._inner.associated_image_names())

    def read_associated(self, name: str) -> np.ndarray:
        return np.asarray(self._inner.read_associated(name))

    def close(self) -> None:
        self._inner.close()
