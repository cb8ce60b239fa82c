"""tifffile backend: OME-TIFF and generic (pyramidal or not) TIFF that OpenSlide rejects.

Blocks are decoded tile by tile (or strip by strip) from the page's data offsets, so opening a file reads
only its IFDs and a read touches only the tiles it overlaps. Sparse tiles (offset/bytecount 0) read as white.
"""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path

import numpy as np

from napari_pathdistill.errors import CorruptTileError, WSIError
from napari_pathdistill.wsi import _multiplex
from napari_pathdistill.wsi._backend_utils import open_fd, paste_tiles, to_rgb
from napari_pathdistill.wsi._blocks import check_chunk_size
from napari_pathdistill.wsi._sample_range import estimated_white, stated_white, stretch
from napari_pathdistill.wsi._tiff_associated import associated_series, read_series_rgb
from napari_pathdistill.wsi._tiff_levels import other_planes_note, pyramid_pages
from napari_pathdistill.wsi._tiff_samples import SampleLayout, sample_layout
from napari_pathdistill.wsi._truncation import intact_levels
from napari_pathdistill.wsi.levels import PyramidLevel

_VENDOR_FLAGS = {
    "svs": "Aperio SVS",
    "ndpi": "Hamamatsu NDPI",
    "scn": "Leica SCN",
    "philips": "Philips TIFF",
    "bif": "Ventana BIF",
}
#: OME length units (UnitsLength) in um; a unit not here ("pixel", "reference frame") is no pixel size
_UNIT_TO_UM = {"µm": 1.0, "um": 1.0, "\u03bcm": 1.0, "nm": 1e-3, "pm": 1e-6, "Å": 1e-4, "\u212b": 1e-4,
               "mm": 1e3, "cm": 1e4, "m": 1e6, "in": 25400.0}  # fmt: skip


def _ome_mpp(ome_xml: str | None) -> tuple[float, float] | None:
    """(y, x) um/px of the first OME Pixels; None when absent or unreadable (a decimal comma is read as a point).

    A malformed value (``PhysicalSizeX="abc"``) or a unit that is no length is no pixel size, never an exception:
    the slide then opens in pixels with the reader's no-MPP warning.
    """
    if not ome_xml:
        return None
    vals = {}
    for ax in ("X", "Y"):
        m = re.search(rf'PhysicalSize{ax}="([^"]+)"', ome_xml)
        u = re.search(rf'PhysicalSize{ax}Unit="([^"]+)"', ome_xml)
        factor = _UNIT_TO_UM.get(u.group(1).strip() if u else "µm")
        if m is None or factor is None:
            return None
        try:
            vals[ax] = float(m.group(1).strip().replace(",", ".")) * factor
        except ValueError:
            return None
    return (vals["Y"], vals["X"])


def _tag_mpp(page) -> tuple[float, float] | None:
    tags = page.tags
    if "XResolution" not in tags or "YResolution" not in tags or "ResolutionUnit" not in tags:
        return None
    per_unit = {2: 25400.0, 3: 10000.0}.get(int(tags["ResolutionUnit"].value))
    if per_unit is None:
        return None
    res = []
    for name in ("YResolution", "XResolution"):
        num, den = tags[name].value
        res.append(per_unit * den / num if num else 0.0)
    # kept as stated: Pyramid ignores a 72/96 dpi placeholder (> 250 um/px: ``_backend.microscope_mpp``)
    return (res[0], res[1]) if all(r > 0 for r in res) else None


class TiffFileBackend:
    """Lazy reader of the first image series of a TIFF (its pyramid levels via tifffile)."""

    name = "tifffile"

    def __init__(self, path: Path) -> None:
        import tifffile

        try:
            self._tif = tifffile.TiffFile(str(path))
        except Exception as exc:
            raise WSIError(
                f"{path} is not a readable TIFF: {exc}. The file may be truncated or corrupt."
            ) from exc
        try:
            found = self._tif.series
        except Exception as exc:  # tifffile's series detection trips on a directory cut off mid-way
            self._tif.close()
            raise WSIError(
                f"{path}: its image directories cannot be read ({exc}): one is cut off or damaged at the end of "
                f"the {path.stat().st_size:,}-byte file. The file is truncated or corrupt (copy it again)."
            ) from exc
        if not found:
            size = path.stat().st_size
            self._tif.close()
            raise WSIError(
                f"{path} is a TIFF without a readable image: its image directory lies beyond the end of the "
                f"{size:,}-byte file or is damaged. The file is truncated or corrupt (copy it again)."
            )
        series = self._tif.series[0]
        #: the channels of a multiplex (multi-channel, non-RGB) slide, None for brightfield
        self.channels: list[_multiplex.ChannelInfo] | None = None
        self._multiplex = self._detect_multiplex(path, series)
        if self._multiplex is not None:
            self.channels = self._multiplex.channels
            pages, declared = [lvl.keyframe for lvl in series.levels], None
        else:  # with the levels tifffile's series detection leaves out (a skipped level, uneven factors)
            pages, declared = pyramid_pages(self._tif, series)
            if note := other_planes_note(path.name, series):
                warnings.warn(note, UserWarning, stacklevel=3)
        # truncated_at: the size (bytes) of a truncated file (levels or tiles lost past its end), None when intact;
        # lost_levels: whether the truncation lost pyramid levels (not only the last tiles of level 0)
        self._pages, self.truncated_at, self.lost_levels = intact_levels(path, self._tif, pages, declared)
        #: a vendor flavour OpenSlide reads (svs, ndpi, ...) as tifffile recognises it, else None
        self.vendor = next(
            (n for f, n in _VENDOR_FLAGS.items() if getattr(self._tif, f"is_{f}", False)), None
        )
        try:
            #: per level, the decoded samples shown (colour, then alpha) (brightfield only)
            self._layouts = [
                self._check_page(path, p) for p in (self._pages if self.channels is None else [])
            ]
        except WSIError:
            self._tif.close()
            raise
        self._tif.filehandle.set_lock(True)  # tifffile's own lazy tag reads lock too
        # Thread-safe by construction: everything tifffile reads lazily through its shared file handle is read
        # now, single-threaded: tag values (offsets, bytecounts, JPEG tables) and each page's decoder, whose
        # construction seeks and reads (``is_jfif``) outside any lock. Tile bytes are then read with
        # ``os.pread`` on a descriptor of our own (no shared file position), decoding needs no file at all.
        self._segments = [(p.dataoffsets, p.databytecounts, p.jpegtables) for p in self._pages]
        self._decoders = [p.decode for p in self._pages]
        #: samples stored as separate planes (planar configuration 2), else 1
        self._planes = [p.samplesperpixel if p.planarconfig == 2 and p.ndim == 3 else 1 for p in self._pages]
        self._fd: int | None = None
        if hasattr(os, "pread"):
            self._fd, self._close_fd = open_fd(self, path)
        self.background = (255, 255, 255)
        h0, w0 = self._pages[0].imagelength, self._pages[0].imagewidth
        self.levels = [self._level(p, h0, w0) for p in self._pages]
        self.properties = {"tifffile.series": series.kind, "tifffile.axes": series.axes}
        self._associated = associated_series(self._tif)
        self.mpp = _ome_mpp(self._tif.ome_metadata) or _tag_mpp(self._pages[0])
        #: the value of white of >8-bit samples (12-bit data in 16-bit samples: 4095), None: the dtype's maximum
        self._white: int | None = None
        self._white = None if self.channels is not None else self._sample_white()
        icc = self._pages[0].tags.get(34675)  # InterColorProfile
        self.icc_profile: bytes | None = bytes(icc.value) if icc is not None and icc.value else None

    def _sample_white(self) -> int | None:
        """White of a >8-bit slide: stated by its tags / OME-XML, else estimated on the coarsest level
        (``_sample_range``); None for 8-bit samples or when white is the dtype's maximum."""
        page = self._pages[0]
        if page.dtype.itemsize == 1:
            return None
        stated = stated_white(page, self._tif.ome_metadata)
        white, source = stated if stated else (None, "the largest value of the coarsest level")
        if white is None:
            last = len(self._pages) - 1

            def decode(i: int) -> np.ndarray | None:
                try:
                    return self._decode_segment(last, i)
                except CorruptTileError:
                    return None

            (th, tw), (h, w) = self.levels[last].tile_shape, self.levels[last].shape
            white = estimated_white(len(self._segments[last][0]), min(th, h) * min(tw, w), decode, page.dtype)
        if white is None or white >= np.iinfo(page.dtype).max:
            return None
        self.properties["pathdistill.sample-range"] = f"0-{white} ({source}), stretched to 8 bits"
        return white

    @property
    def sample_white(self) -> int | None:
        """The value of white of samples stored in more bits than they use (12 bits in 16: 4095), else None."""
        return self._white

    def _detect_multiplex(self, path: Path, series) -> _multiplex.ChannelSource | None:
        try:
            return _multiplex.detect(path, self._tif, series)
        except WSIError:
            self._tif.close()
            raise

    def read_channel_level(self, level: int, c: int, x: int, y: int, w: int, h: int) -> np.ndarray:
        """Channel ``c`` of a multiplex slide: block [y, y+h) x [x, x+w) of ``level`` -> (h, w) native dtype."""
        if self._multiplex is None:
            raise WSIError(f"{self._tif.filename} is not a multiplex image; it has no separate channels.")
        return self._multiplex.read(self.levels[level], level, c, (x, y, w, h), self._read_bytes)

    @staticmethod
    def _check_page(path: Path, page) -> SampleLayout:
        if not page.shape or 0 in page.shape:  # an image directory without its tags (all zero so far)
            raise WSIError(
                f"{path}: its image directory at byte {page.offset:,} holds no image (size {page.imagewidth}x"
                f"{page.imagelength}, {len(page.tags)} tags): the file is still being written, or was cut off or "
                "damaged. Wait until the program writing it has finished, else copy it again."
            )
        samples = page.samplesperpixel
        planar = page.ndim == 3 and samples > 1 and page.planarconfig == 2
        if page.ndim not in (2, 3) or (page.ndim == 3 and page.shape[0 if planar else 2] != samples):
            raise WSIError(
                f"{path}: unsupported TIFF layout {page.shape} (axes {page.axes}); expected YX, YXS or "
                "(planar) SYX."
            )
        if page.dtype is None or page.dtype.kind not in "ui":
            raise WSIError(
                f"{path}: pixel type {page.dtype} is not supported; expected 8/16-bit brightfield RGB."
            )
        return sample_layout(path, page)

    @staticmethod
    def _level(page, h0: int, w0: int) -> PyramidLevel:
        h, w = page.imagelength, page.imagewidth  # page.shape is (samples, h, w) for a planar page
        ch, cw = page.chunks[:2]
        return PyramidLevel(shape=(h, w), downsample=(w0 / w + h0 / h) / 2.0, tile_shape=(ch, cw))

    def _read_bytes(self, offset: int, count: int) -> bytes:
        """``count`` bytes at ``offset``: ``os.pread`` (position-free), else tifffile's handle under its lock."""
        if self._fd is not None:
            return os.pread(self._fd, count, offset)
        fh = self._tif.filehandle
        with fh.lock:
            fh.seek(offset)
            return fh.read(count)

    def _read_chunk(self, level: int, index: int) -> np.ndarray | None:
        """Tile (or strip) ``index`` of ``level`` as (h, w, 3) uint8, None where it is sparse.

        A planar (separate-plane) page stores each sample's tiles after the previous sample's: the tile's
        planes are decoded one by one and stacked.
        """
        planes = self._planes[level]
        if planes == 1:
            seg = self._decode_segment(level, index)
        else:
            per_plane = len(self._segments[level][0]) // planes
            parts = [self._decode_segment(level, index + s * per_plane) for s in range(planes)]
            seg = None if any(p is None for p in parts) else np.concatenate(parts, axis=-1)  # type: ignore[arg-type]
        return (
            None if seg is None else to_rgb(self._layouts[level].apply(seg, self.background), self.background)
        )

    def _decode_segment(self, level: int, index: int) -> np.ndarray | None:
        """Segment ``index`` of ``level`` decoded to (h, w) or (h, w, samples); None where it is sparse."""
        offsets, counts, jpegtables = self._segments[level]
        offset, count = offsets[index], counts[index]
        if not offset or not count:
            return None
        data = self._read_bytes(offset, count)
        if len(data) < count:
            raise CorruptTileError(
                f"{self._tif.filename}: level {level} tile {index} is truncated; the file is incomplete."
            )
        try:
            seg, _, shape = self._decoders[level](data, index, jpegtables=jpegtables)
        except Exception as exc:
            raise CorruptTileError(
                f"{self._tif.filename}: level {level} tile {index} cannot be decoded ({exc}); corrupt file."
            ) from exc
        seg = np.asarray(seg).reshape(shape[1:] if len(shape) == 4 else shape)
        seg = seg.reshape(seg.shape[-3:]) if seg.ndim > 3 else seg
        return stretch(seg, self._white) if self._white else seg

    def read_level(self, level: int, x: int, y: int, w: int, h: int) -> np.ndarray:
        """Read the block [y, y+h) x [x, x+w) of ``level`` (level pixels); outside the image is white.

        Raises:
            WSIError: one tile/strip of the level is too large to decode (see ``_blocks.check_chunk_size``).
            CorruptTileError: a tile it overlaps cannot be decoded.
        """
        check_chunk_size(self._tif.filename, self.levels[level])
        out = np.full((h, w, 3), 255, dtype=np.uint8)
        lv = self.levels[level]
        return paste_tiles(out, x, y, lv.shape, lv.tile_shape, lambda i: self._read_chunk(level, i))

    def read_region(self, location: tuple[int, int], level: int, size: tuple[int, int]) -> np.ndarray:
        """OpenSlide-style read: ``location`` (x, y) in level-0 px, ``size`` (w, h) in level px."""
        ds = self.levels[level].downsample
        return self.read_level(level, round(location[0] / ds), round(location[1] / ds), size[0], size[1])

    def associated_image_names(self) -> list[str]:
        """An OME-TIFF's label / macro / thumbnail Images (``_tiff_associated``); other TIFFs have none."""
        return sorted(self._associated)

    def read_associated(self, name: str) -> np.ndarray:
        if name not in self._associated:
            names = ", ".join(self.associated_image_names()) or "none"
            raise WSIError(f"No associated image {name!r}; this slide has: {names}.")
        return read_series_rgb(self._tif.filename, name, self._associated[name])

    def close(self) -> None:
        if self._fd is not None:
            self._fd = None
            self._close_fd()
        self._tif.close()
