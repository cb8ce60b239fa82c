"""TIFFs with an embedded ICC profile, and a real non-sRGB RGB profile derived from the TCGA slide's sRGB one."""

from __future__ import annotations

import io
import struct
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image, ImageCms


def srgb_profile_of(tiff: Path) -> bytes:
    """The ICC profile (TIFF tag 34675) of a TIFF's first page; the TCGA SVS has 'sRGB IEC61966-2.1'."""
    with tifffile.TiffFile(tiff) as tif:
        return bytes(tif.pages[0].tags[34675].value)


def swap_primaries(profile: bytes) -> bytes:
    """The profile with its red and blue colorant tags swapped: a valid RGB profile far from sRGB."""
    count = struct.unpack(">I", profile[128:132])[0]
    entries = [struct.unpack(">4sII", profile[132 + 12 * i : 144 + 12 * i]) for i in range(count)]
    where = {sig: (off, size) for sig, off, size in entries}
    swap = {b"rXYZ": b"bXYZ", b"bXYZ": b"rXYZ"}
    table = b"".join(struct.pack(">4sII", sig, *where[swap.get(sig, sig)]) for sig, _, _ in entries)
    return profile[:132] + table + profile[132 + 12 * count :]


def write_icc_tiff(path: Path, image: np.ndarray, icc: bytes | None, mpp: float = 0.5) -> Path:
    """A tiled 2-level TIFF (SubIFD pyramid) of ``image`` with ``icc`` in its InterColorProfile tag."""
    kw = {"tile": (128, 128), "compression": "zlib", "photometric": "rgb", "iccprofile": icc}
    with tifffile.TiffWriter(path) as tw:
        tw.write(image, subifds=1, resolution=(1e4 / mpp, 1e4 / mpp), resolutionunit="CENTIMETER", **kw)
        tw.write(image[::2, ::2].copy(), subfiletype=1, **kw)
    return path


def imagecms_srgb(image: np.ndarray, profile: bytes) -> np.ndarray:
    """PIL.ImageCms's own conversion of ``image`` to sRGB (the profile's default intent), for comparison."""
    src = ImageCms.ImageCmsProfile(io.BytesIO(profile))
    intent = ImageCms.Intent(ImageCms.getDefaultIntent(src))
    xform = ImageCms.buildTransform(src, ImageCms.createProfile("sRGB"), "RGB", "RGB", intent)
    return np.asarray(ImageCms.applyTransform(Image.fromarray(image), xform))
