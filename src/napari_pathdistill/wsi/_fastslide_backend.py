"""Optional fastslide backend (PyPI ``fastslide``, Apache-2.0): thread-safe reads of SVS, NDPI, MRXS, VSI/ETS,
CZI, iSyntax, QPTIFF, OME-TIFF and DICOM.

It is used only when the package is installed, per file (see :func:`choose`): by default for formats OpenSlide
and tifffile do not read (Olympus VSI, Zeiss CZI, Philips iSyntax); ``PATHDISTILL_WSI_BACKEND=fastslide`` makes
it the first choice for every vendor file it supports (not (OME-)TIFF, which tifffile reads right: fastslide 0.8.1
shows the JFIF JPEG tiles of the OS-2 NDPI OME-TIFF as raw YCbCr, salmon background), ``=openslide`` never
uses it. Pixels equal OpenSlide's within
the JPEG decoders' rounding on the shared slides (see tests/wsi/test_fastslide.py and docs/plugin.md).

fastslide's ``read_region`` takes level-native coordinates and returns only the part inside the slide; this
backend converts from OpenSlide's level-0 convention and pads the outside with white, like the other backends.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import numpy as np

from napari_pathdistill.errors import WSIError
from napari_pathdistill.wsi._backend_utils import to_rgb
from napari_pathdistill.wsi.levels import PyramidLevel

#: formats only fastslide reads here: chosen for them by default when the package is installed
ONLY_FASTSLIDE = (".vsi", ".ets", ".czi", ".isyntax", ".i2syntax")
#: dask chunk side for formats whose native tile size fastslide does not report
DEFAULT_TILE = 512
_ENV = "PATHDISTILL_WSI_BACKEND"


def available() -> bool:
    """Whether the optional ``fastslide`` package is importable (without importing it)."""
    return importlib.util.find_spec("fastslide") is not None


def preference() -> str:
    """The user's backend preference from ``PATHDISTILL_WSI_BACKEND``: auto (default), fastslide or openslide."""
    value = os.environ.get(_ENV, "auto").strip().lower() or "auto"
    if value not in ("auto", "fastslide", "openslide"):
        raise WSIError(f"{_ENV}={value!r} is not one of auto, fastslide, openslide.")
    return value


def choose(path: Path) -> bool:
    """Whether ``path`` should be opened with fastslide: installed, wanted, and a format it supports."""
    pref = preference()
    if pref == "openslide" or not available():
        return False
    import fastslide

    name = path.name.lower()
    if path.is_dir():
        return pref == "fastslide" and any(f.suffix.lower() == ".dcm" for f in path.iterdir())
    if not name.endswith(tuple(fastslide.get_supported_extensions())):  # is_supported() opens the file
        return False
    if name.endswith((".tif", ".tiff", ".zarr")):
        return False  # tifffile reads these right; fastslide 0.8.1 shows OS-2's JFIF JPEG tiles as raw YCbCr
    return pref == "fastslide" or name.endswith(ONLY_FASTSLIDE)


class FastSlideBackend:
    """Reads one slide with ``fastslide.FastSlide`` (thread-safe, its own tile cache disabled: ours is used)."""

    name = "fastslide"

    def __init__(self, path: Path) -> None:
        import fastslide

        try:
            self._slide = fastslide.FastSlide.from_file_path(str(path), cache=None)
        except RuntimeError as exc:
            raise WSIError(
                f"fastslide cannot read {path}: {exc}. The file may be truncated or corrupt."
            ) from exc
        s = self._slide
        (w0, h0), tile = s.level_dimensions[0], _tile_shape(path)
        self.levels = [
            PyramidLevel(shape=(h, w), downsample=float(ds), tile_shape=tile)
            for (w, h), ds in zip(s.level_dimensions, s.level_downsamples, strict=True)
        ]
        self.properties = {f"fastslide.{k}": str(v) for k, v in s.properties.items()}
        self.properties["fastslide.format"] = s.format
        mx, my = (float(v) for v in s.mpp)
        self.mpp = (my, mx) if mx > 0 and my > 0 else None
        if s.num_channels not in (1, 3, 4):
            s.close()
            raise WSIError(
                f"{path.name} has {s.num_channels} channels (fluorescence/multiplex): the models expect "
                "brightfield RGB."
            )
        self.vendor = s.format
        #: the slide's embedded ICC profile, or None (read by ``Pyramid``; fastslide's own apply_icc stays off)
        self.icc_profile: bytes | None = s.icc_profile or None
        self._shape0 = (h0, w0)

    def read_level(self, level: int, x: int, y: int, w: int, h: int) -> np.ndarray:
        """The block [y, y+h) x [x, x+w) of ``level`` in level pixels as (h, w, 3) uint8; outside is white."""
        out = np.full((h, w, 3), 255, dtype=np.uint8)
        lh, lw = self.levels[level].shape
        x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + w, lw), min(y + h, lh)
        if x1 <= x0 or y1 <= y0:
            return out
        try:
            img = self._slide.read_region((x0, y0), level, (x1 - x0, y1 - y0)).numpy()
        except RuntimeError as exc:
            raise WSIError(f"{self._slide.source_path}: region ({x0}, {y0}) of level {level}: {exc}") from exc
        block = to_rgb(np.asarray(img))
        out[y0 - y : y0 - y + block.shape[0], x0 - x : x0 - x + block.shape[1]] = block
        return out

    def read_region(self, location: tuple[int, int], level: int, size: tuple[int, int]) -> np.ndarray:
        """OpenSlide-style read: ``location`` (x, y) in level-0 px, ``size`` (w, h) in level px."""
        ds = self.levels[level].downsample
        return self.read_level(level, round(location[0] / ds), round(location[1] / ds), size[0], size[1])

    def associated_image_names(self) -> list[str]:
        return sorted(self._slide.associated_images.keys())

    def read_associated(self, name: str) -> np.ndarray:
        if name not in self._slide.associated_images:
            raise WSIError(f"No associated image {name!r}; this slide has {self.associated_image_names()}.")
        return to_rgb(np.asarray(self._slide.associated_images[name].numpy()))

    def close(self) -> None:
        self._slide.close()


def _tile_shape(path: Path) -> tuple[int, int]:
    """Native tile (h, w) of a TIFF-based slide's first page, else :data:`DEFAULT_TILE` square."""
    if path.is_file():
        try:
            import tifffile

            with tifffile.TiffFile(str(path)) as tif:
                page = tif.pages.first  # a TiffPage, with its tile geometry
                if page.is_tiled:
                    return (int(page.tilelength), int(page.tilewidth))
        except Exception:  # not a TIFF (VSI, CZI, iSyntax, MRXS index): fastslide does not say
            pass
    return (DEFAULT_TILE, DEFAULT_TILE)
