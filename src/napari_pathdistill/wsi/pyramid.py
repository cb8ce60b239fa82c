"""Open a whole-slide image as a lazy multiscale pyramid.

``open_pyramid`` opens a path with the backend ``_formats.choose_backend`` picks: OpenSlide for everything it
reads (SVS, NDPI, MRXS, SCN, BIF, VMS, DICOM, generic tiled TIFF; pydicom for the DICOM it refuses), tifffile
for OME-TIFF, SubIFD pyramids, multiplex and other TIFFs OpenSlide rejects, the optional fastslide for VSI, CZI
and iSyntax (or for every vendor format it reads with ``PATHDISTILL_WSI_BACKEND=fastslide``).
``Pyramid.to_dask`` returns one dask array per level with one chunk per native tile (``_dask_levels``);
building it reads no pixels.
"""

from __future__ import annotations

import math
import os
import uuid
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from napari_pathdistill.errors import CorruptTileWarning, WSIError
from napari_pathdistill.wsi._backend import Backend as _Backend
from napari_pathdistill.wsi._backend import microscope_mpp
from napari_pathdistill.wsi._backend_utils import BlockCache
from napari_pathdistill.wsi._dask_levels import LevelArray, TileWarnings, chunk_sizes
from napari_pathdistill.wsi._formats import choose_backend, permission_message
from napari_pathdistill.wsi._multiplex import ChannelInfo, channel_dask, multiplex_refusal
from napari_pathdistill.wsi.levels import PyramidLevel

__all__ = ["Pyramid", "PyramidLevel", "layer_factor", "open_pyramid", "permission_message", "scale_placement"]


#: relative excess of a level's downsample over the one asked for that still serves it: scanners write levels of
#: 4.000112 or 16.0045 for 4 and 16 (level sizes rounded to whole px); an exact comparison passed them over for
#: level 0 (16 times the pixels to decode); TRIDENT accepts 0.01 absolute. 0.1 % of a 224 px tile is 0.2 px.
LEVEL_DOWNSAMPLE_TOLERANCE = 1e-3


class Pyramid:
    """A whole-slide image: level geometry, MPP, thread-safe RGB reads and lazy dask levels.

    Use as a context manager (``with open_pyramid(p) as pyr: ...``) or call ``close()``.
    """

    def __init__(self, path: Path, backend: _Backend) -> None:
        self.path = path
        self._backend = backend
        self.backend: str = backend.name
        self.levels: list[PyramidLevel] = list(backend.levels)
        self.mpp: tuple[float, float] | None = microscope_mpp(backend.mpp)
        #: the file's (y, x) um/px when it is no microscope's (a 72/96 dpi placeholder: > MAX_MPP): ignored
        self.implausible_mpp: tuple[float, float] | None = backend.mpp if self.mpp != backend.mpp else None
        #: the user's level-0 um/px when ``mpp`` comes from ``open_pyramid(fallback_mpp=...)`` (the file states
        #: none: napari shows such a slide in pixels), None when ``mpp`` is the file's own (or there is none)
        self.mpp_override: float | None = None
        #: what :meth:`thumbnail` could not decode ("N tiles of level L cannot be decoded ..."), one note per
        #: call that met such tiles: tissue detection counted them as background
        self.thumbnail_warnings: list[str] = []
        self.properties: dict[str, str] = dict(backend.properties)
        #: the size in bytes of a TIFF cut short (pyramid levels or tiles lost past its end), None when intact
        self.truncated_at: int | None = getattr(backend, "truncated_at", None)
        #: whether that truncation lost pyramid levels (False: only the last tiles of level 0, all levels are there)
        self.lost_levels: bool = bool(getattr(backend, "lost_levels", False))
        self._dask: list[Any] | None = None
        self._token = uuid.uuid4().hex
        self._cache = BlockCache(int(float(os.environ.get("PATHDISTILL_CHUNK_CACHE_MB", "128")) * 2**20))
        self._tile_warnings = TileWarnings()  # the viewer's corrupt-tile warnings, all levels together
        #: the slide's embedded ICC profile (OpenSlide's colour profile, TIFF tag 34675), None if it has none
        self.icc_profile: bytes | None = getattr(backend, "icc_profile", None)
        #: "raw" (the file's pixels, the default) or "srgb" (converted with the ICC profile: ``use_srgb``)
        self.color = "raw"
        #: the channels of a multiplex immunofluorescence slide (``channel_dask``), None for brightfield RGB
        self.channels: list[ChannelInfo] | None = getattr(backend, "channels", None)
        self._read_channel = getattr(backend, "read_channel_level", None)

    def use_srgb(self) -> bool:
        """From now on convert every read (dask levels, ``read_region``, thumbnail) from the ICC profile to sRGB.

        Arrays from an earlier ``to_dask`` keep raw pixels; call ``to_dask`` again. A slide without a profile is
        left raw (its pixels are taken as sRGB already). Associated images stay raw.

        Returns:
            Whether a conversion applies (``color == "srgb"``).

        Raises:
            WSIError: the embedded profile cannot be read or is not an RGB profile.
        """
        if self.color == "srgb" or not self.icc_profile:
            return self.color == "srgb"
        from napari_pathdistill.wsi.icc import SRGBBackend, SRGBTransform

        self._backend = SRGBBackend(self._backend, SRGBTransform(self.icc_profile, self.path.name))
        self.color, self._dask, self._token = "srgb", None, uuid.uuid4().hex
        self._cache = BlockCache(self._cache.max_bytes)  # never serve raw blocks decoded before
        return True

    def __repr__(self) -> str:
        dims = ", ".join(f"{lv.shape[1]}x{lv.shape[0]}@{lv.downsample:.4g}" for lv in self.levels)
        return f"Pyramid({self.path.name!r}, backend={self.backend!r}, mpp={self.mpp}, levels=[{dims}])"

    def __enter__(self) -> Pyramid:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def dimensions(self) -> tuple[int, int]:
        """Level-0 (width, height), as in OpenSlide."""
        h, w = self.levels[0].shape
        return (w, h)

    def read_region(self, location: tuple[int, int], level: int, size: tuple[int, int]) -> np.ndarray:
        """Read a region like ``OpenSlide.read_region``.

        Args:
            location: (x, y) top-left in level-0 pixels.
            level: pyramid level index.
            size: (w, h) in pixels of ``level``.

        Returns:
            (h, w, 3) uint8 RGB, alpha composited on white, area outside the slide white.
        """
        self.require_brightfield("reading RGB tiles")
        if not 0 <= level < len(self.levels):
            raise WSIError(f"level {level} out of range: {self.path.name} has {len(self.levels)} levels")
        if size[0] <= 0 or size[1] <= 0:
            raise ValueError(f"size must be positive, got {size}")
        return self._backend.read_region(
            (int(location[0]), int(location[1])), level, (int(size[0]), int(size[1]))
        )

    def to_dask(self) -> list[Any]:
        """One lazy ``dask.array.Array`` (h, w, 3) uint8 per level, one chunk per native tile.

        A chunk at level pixels (x, y) is read at level-0 location (round(x * ds), round(y * ds)), so it
        equals ``read_region`` there. The graph is a single blockwise layer: no per-chunk tasks are built.
        Decoded chunks are kept in an LRU cache shared by the levels (``PATHDISTILL_CHUNK_CACHE_MB``, default
        128; 0 disables it), so napari panning and overlapping tile reads do not decode a chunk twice.
        """
        self.require_brightfield("an RGB view")
        if self._dask is None:
            self._dask = [self._level_to_dask(i) for i in range(len(self.levels))]
        return list(self._dask)

    def require_brightfield(self, purpose: str) -> None:
        """Refuse ``purpose`` (e.g. "embedding") for a multiplex slide: models expect brightfield RGB.

        Raises:
            WSIError: the slide is multiplex immunofluorescence (``channels`` is not None).
        """
        if self.channels is not None:
            raise WSIError(multiplex_refusal(self.path.name, self.channels, purpose))

    def channel_dask(self) -> list[Any]:
        """Per level a lazy (C, h, w) dask array of a multiplex slide's channels (native dtype).

        One chunk per channel and native tile; chunks share the decoded-block cache of ``to_dask``.

        Raises:
            WSIError: the slide is brightfield (it has no separate channels).
        """
        if self.channels is None or self._read_channel is None:
            raise WSIError(f"{self.path.name} is a brightfield slide without separate channels; use to_dask.")
        name = f"pathdistill-{self.path.name}-{self._token}-channels"
        return channel_dask(self._read_channel, self.levels, self.channels, self._cache, name)

    def _level_to_dask(self, level: int) -> Any:
        import dask.array as da

        (h, w), (th, tw) = self.levels[level].shape, self.levels[level].tile_shape
        chunks = (chunk_sizes(h, th), chunk_sizes(w, tw), (3,))
        # unique per Pyramid object for the life of the process: id(self) is reused after garbage collection,
        # and napari's global dask cache would then serve an earlier slide's chunks under the same keys
        name = f"pathdistill-{self.path.name}-{self._token}-L{level}"
        source = LevelArray(self._backend, level, self.levels[level], self._cache, self._tile_warnings)
        meta = np.empty((0, 0, 0), np.uint8)
        return da.from_array(source, chunks=chunks, name=name, asarray=False, fancy=False, meta=meta)

    def associated_image_names(self) -> list[str]:
        """Names of associated images (e.g. ``label``, ``macro``, ``thumbnail``); empty when none."""
        return self._backend.associated_image_names()

    def read_associated(self, name: str) -> np.ndarray:
        """An associated image as (h, w, 3) uint8 RGB; raises WSIError for an unknown name."""
        return self._backend.read_associated(name)

    def best_level_for_downsample(self, downsample: float) -> int:
        """Index of the coarsest level whose downsample is <= ``downsample`` (level 0 if none), within
        ``LEVEL_DOWNSAMPLE_TOLERANCE``: an Aperio level of 4.000112 serves a downsample of 4."""
        best = 0
        for i, lv in enumerate(self.levels):
            if lv.downsample <= downsample * (1 + LEVEL_DOWNSAMPLE_TOLERANCE):
                best = i if lv.downsample >= self.levels[best].downsample else best
        return best

    def thumbnail(
        self,
        max_size: int = 1024,
        check: Callable[[], None] | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> tuple[np.ndarray, float]:
        """A low-resolution RGB image whose longer side is at most ``max_size``.

        Reads the coarsest level at least as fine as needed block by block (a few megapixels each, see
        :mod:`~napari_pathdistill.wsi._blocks`), box-averages each block by a power of two into a small image
        and area-resamples that to the output: memory stays about the output plus one block, whatever the
        level's size (a 60,000 px slide without a pyramid included). Tiles that cannot be decoded are grey
        (one :class:`CorruptTileWarning` says how many; its text is kept in :attr:`thumbnail_warnings`).
        ``check`` is called before each block (it raises to stop: Cancel of a tissue run), ``progress`` after
        each with (blocks read, blocks in all).

        Returns:
            (image (h, w, 3) uint8, downsample of the image with respect to level 0 (x and y mean)).
        """
        from PIL import Image

        from napari_pathdistill.wsi._blocks import check_chunk_size, reduced_level, reduction_factor

        self.require_brightfield("tissue detection (an RGB thumbnail)")
        h0, w0 = self.levels[0].shape
        level = self.best_level_for_downsample(max(max(h0, w0) / max_size, 1.0))
        lv = self.levels[level]
        check_chunk_size(self.path, lv)
        scale = min(1.0, max_size / max(lv.shape))
        out_shape = (max(1, round(lv.shape[0] * scale)), max(1, round(lv.shape[1] * scale)))
        k = reduction_factor(lv.shape, out_shape)
        img, bad = reduced_level(self._backend.read_level, level, lv, k, check, progress)
        if img.shape[:2] != out_shape:
            img = np.asarray(Image.fromarray(img).resize(out_shape[::-1], Image.Resampling.BOX))
        if bad:
            note = (f"{bad} tiles of level {level} cannot be decoded (corrupt file); they are grey in the "
                    "thumbnail and count as background.")  # fmt: skip
            self.thumbnail_warnings.append(note)
            warnings.warn(f"{self.path.name}: {note}", CorruptTileWarning, stacklevel=2)
        return img, (w0 / img.shape[1] + h0 / img.shape[0]) / 2.0

    def close(self) -> None:
        """Release the file handle; the dask arrays stop working after this."""
        self._backend.close()


def open_pyramid(path: str | Path, *, fallback_mpp: float | None = None, color: str = "raw") -> Pyramid:
    """Open a slide file (or DICOM folder, or a small plain JPEG/PNG) as a :class:`Pyramid`.

    This is the one place where a user-given um/px enters: everything downstream (tile grids, mask and overlay
    placement, HDF5 attrs) reads ``Pyramid.mpp``.

    Args:
        path: the slide.
        fallback_mpp: level-0 um/px of a slide whose file states none (plain images, some TIFFs, the TCGA
            frozen sections); a file's own MPP always wins, so one value can serve a whole cohort or both
            slides of a pair. None or 0: none (such a slide is tiled in level-0 pixels).
        color: ``"raw"`` (the file's pixels) or ``"srgb"``: pixels converted from the slide's ICC profile to
            sRGB (:meth:`Pyramid.use_srgb`; a slide without a profile stays raw).

    Raises:
        WSIError: missing path, empty folder, unsupported format, or a truncated/corrupt file.
        ValueError: ``fallback_mpp`` is negative or not finite, or ``color`` is unknown.
    """
    if fallback_mpp is not None and not (math.isfinite(fallback_mpp) and fallback_mpp >= 0):
        raise ValueError(f"fallback_mpp must be a positive um/px, or None/0 for none; got {fallback_mpp}")
    if color not in ("raw", "srgb"):
        raise ValueError(f"color must be 'raw' or 'srgb', got {color!r}")
    path = Path(path).expanduser()
    pyr = Pyramid(path, choose_backend(path))
    if color == "srgb":
        try:
            pyr.use_srgb()
        except WSIError:
            pyr.close()
            raise
    if pyr.mpp is None and fallback_mpp:
        pyr.mpp = (float(fallback_mpp), float(fallback_mpp))
        pyr.mpp_override = float(fallback_mpp)
    return pyr


def layer_factor(pyr: Pyramid) -> float:
    """Slide-layer units per unit of ``pyr``'s geometry: 1, except for a slide whose file states no MPP, opened
    with the user's level-0 um/px (``open_pyramid(fallback_mpp=...)``): its tiles are cut and placed in um, but
    napari shows the slide in level-0 pixels, so maps computed on it are placed at 1 / that um/px."""
    return 1.0 / pyr.mpp_override if pyr.mpp_override else 1.0


def scale_placement(
    scale: tuple[float, float], translate: tuple[float, float], f: float
) -> tuple[tuple[float, float], tuple[float, float]]:
    """napari (scale, translate) of a raster placed in a pyramid's units, in its slide layer's: both times ``f``
    (:func:`layer_factor`)."""
    return (scale[0] * f, scale[1] * f), (translate[0] * f, translate[1] * f)
