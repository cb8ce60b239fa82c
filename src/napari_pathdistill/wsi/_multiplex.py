"""Multiplex immunofluorescence TIFFs (OME-TIFF with several channels, PerkinElmer/Akoya QPTIFF).

Such a slide is a stack of single-channel greyscale images (one page per channel at every pyramid level), not
brightfield RGB. The tifffile backend detects it here (:func:`detect`); its channels are then read natively,
tile by tile (:class:`ChannelSource`), and shown as one napari layer per channel, while everything that feeds
a model or tissue detection refuses it (:func:`multiplex_refusal`): the models expect brightfield RGB.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from napari_pathdistill.errors import WSIError
from napari_pathdistill.wsi._backend_utils import BlockCache, paste_tiles
from napari_pathdistill.wsi.levels import PyramidLevel

ReadBytes = Callable[[int, int], bytes]


@dataclass(frozen=True)
class ChannelInfo:
    """One channel of a multiplex slide.

    Attributes:
        name: marker / fluorophore name from the file's metadata (``channel <i>`` when it states none).
        color: display colour (r, g, b) 0-255 from the metadata, None when it states none.
        dtype: native pixel type of the channel.
    """

    name: str
    color: tuple[int, int, int] | None
    dtype: np.dtype


def multiplex_refusal(name: str, channels: list[ChannelInfo], purpose: str) -> str:
    """The user message refusing ``purpose`` (e.g. "embedding") for a multiplex slide."""
    names = ", ".join(ch.name for ch in channels[:8]) + (", ..." if len(channels) > 8 else "")
    return (
        f"{name} is a multiplex immunofluorescence image ({len(channels)} channels: {names}), not a "
        f"brightfield slide: {purpose} is refused because the models and tissue detection expect brightfield "
        "RGB (H&E, IHC). napari shows its channels as separate layers; it cannot be tiled or embedded."
    )


class ChannelSource:
    """Tile-by-tile reads of every channel at every level of a multiplex series.

    Everything tifffile would read lazily (offsets, byte counts, JPEG tables, decoders) is taken at
    construction, so reads are thread-safe given a position-free ``read_bytes``.
    """

    def __init__(self, filename: str, channels: list[ChannelInfo], segments: list[list[tuple]]) -> None:
        self.filename = filename
        self.channels = channels
        self._segments = segments  # [level][channel] -> (offsets, bytecounts, jpegtables, decode)

    def _chunk(self, level: int, c: int, index: int, read_bytes: ReadBytes) -> np.ndarray | None:
        offsets, counts, jpegtables, decode = self._segments[level][c]
        offset, count = offsets[index], counts[index]
        if not offset or not count:
            return None
        data = read_bytes(offset, count)
        if len(data) < count:
            raise WSIError(f"{self.filename}: channel {c} tile {index} is truncated; the file is incomplete.")
        try:
            seg, _, shape = decode(data, index, jpegtables=jpegtables)
        except Exception as exc:
            raise WSIError(
                f"{self.filename}: channel {c} tile {index} cannot be decoded ({exc}); corrupt file."
            ) from exc
        return np.asarray(seg).reshape(shape[-3], shape[-2])

    def read(
        self, lv: PyramidLevel, level: int, c: int, box: tuple[int, int, int, int], read_bytes: ReadBytes
    ) -> np.ndarray:
        """Block ``box`` = (x, y, w, h) in ``level`` pixels of channel ``c`` -> (h, w) native dtype.

        Outside the image and sparse tiles read as 0 (dark background).
        """
        x, y, w, h = box
        out = np.zeros((h, w), dtype=self.channels[c].dtype)
        return paste_tiles(out, x, y, lv.shape, lv.tile_shape, lambda i: self._chunk(level, c, i, read_bytes))


def detect(path: Path, tif: Any, series: Any) -> ChannelSource | None:
    """A :class:`ChannelSource` when ``series`` (of ``tif``) is a multi-channel non-RGB image, else None.

    Raises:
        WSIError: a multiplex series this reader cannot show (several focal planes or time points, pages
            that are not single-channel 2-D images, a missing channel page, a non-numeric pixel type).
    """
    axes, shape = series.axes, series.shape  # squeezed
    if "C" not in axes or shape[axes.index("C")] < 2 or ("S" in axes and shape[axes.index("S")] > 1):
        return None
    full_axes, full_shape = series.get_axes(False), series.get_shape(False)
    plane_axes = full_axes.rstrip("S")[:-2]  # the page-indexing dimensions, before Y, X (and S)
    plane_shape = full_shape[: len(plane_axes)]
    extra = {a: n for a, n in zip(plane_axes, plane_shape, strict=True) if a != "C" and n > 1}
    if extra:
        dims = ", ".join(f"{a}={n}" for a, n in extra.items())
        raise WSIError(
            f"{path.name}: a multi-channel image with {dims} besides its {shape[axes.index('C')]} channels "
            f"(axes {full_axes}); only one focal plane and time point per channel is supported."
        )
    n_channels = plane_shape[plane_axes.index("C")]
    pages = [_channel_pages(path, level, plane_axes, plane_shape, n_channels) for level in series.levels]
    channels = _channel_infos(tif, series, pages[0], n_channels)
    segments = [[_segment(p) for p in level_pages] for level_pages in pages]
    return ChannelSource(tif.filename, channels, segments)


def _channel_pages(path: Path, level: Any, plane_axes: str, plane_shape: tuple, n: int) -> list:
    """The page of each channel (first plane of the other dimensions) of one series level."""
    key = level.keyframe
    if key.ndim != 2 or key.samplesperpixel != 1 or key.dtype is None or key.dtype.kind not in "uif":
        raise WSIError(
            f"{path.name}: unsupported multi-channel TIFF layout: page {key.shape} (axes {key.axes}, "
            f"{key.dtype}); expected one single-channel YX page per channel."
        )
    ci = plane_axes.index("C")
    pages = []
    for c in range(n):
        index = [0] * len(plane_axes)
        index[ci] = c
        page = level.pages[int(np.ravel_multi_index(index, plane_shape))]
        if page is None:
            raise WSIError(f"{path.name}: the page of channel {c} is missing; the file is incomplete.")
        pages.append(page)
    return pages


def _segment(page: Any) -> tuple:
    """(offsets, bytecounts, jpegtables, decode) of a page or frame (frames use their keyframe's decoder)."""
    key = page.keyframe if page.is_frame else page
    return (page.dataoffsets, page.databytecounts, key.jpegtables, key.decode)


def _channel_infos(tif: Any, series: Any, pages: list, n: int) -> list[ChannelInfo]:
    """Names and colours from the OME-XML or from each QPTIFF page's XML; ``channel <i>`` otherwise."""
    meta: list[tuple[str | None, tuple[int, int, int] | None]] = [(None, None)] * n
    if tif.is_ome:
        meta = _ome_channels(tif.ome_metadata, n) or meta
    elif series.kind == "qpi":
        meta = [_qpi_channel(p.description) for p in pages]
    dtype = np.dtype(series.dtype)
    return [ChannelInfo(name or f"channel {c}", color, dtype) for c, (name, color) in enumerate(meta)]


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _ome_channels(ome_xml: str | None, n: int) -> list[tuple[str | None, tuple[int, int, int] | None]] | None:
    """Name and colour of the ``n`` channels of the first OME Image with ``n`` Channel elements."""
    try:
        root = ET.fromstring(ome_xml or "")
    except ET.ParseError:
        return None
    for image in (e for e in root if _local(e.tag) == "Image"):
        pixels = next((e for e in image if _local(e.tag) == "Pixels"), None)
        chans = [e for e in (pixels if pixels is not None else []) if _local(e.tag) == "Channel"]
        if len(chans) == n:
            return [(ch.get("Name") or None, _ome_color(ch.get("Color"))) for ch in chans]
    return None


def _ome_color(value: str | None) -> tuple[int, int, int] | None:
    """OME ``Color``: a signed 32-bit RGBA integer (e.g. -16776961 = 0xFF0000FF, opaque red)."""
    try:
        rgba = int(value) & 0xFFFFFFFF if value is not None else None
    except ValueError:
        return None
    return None if rgba is None else ((rgba >> 24) & 255, (rgba >> 16) & 255, (rgba >> 8) & 255)


def _qpi_channel(description: str) -> tuple[str | None, tuple[int, int, int] | None]:
    """Name and colour from a ``<PerkinElmer-QPI-ImageDescription>`` page description.

    ``Biomarker`` (PhenoCycler: the marker) comes first, with ``Name`` (the fluorophore) in parentheses
    when it differs; ``Color`` is "r,g,b".
    """
    try:  # real files declare encoding="utf-16" in a str that is not: drop the declaration
        root = ET.fromstring(re.sub(r"^\s*<\?xml[^>]*\?>", "", description or ""))
    except ET.ParseError:
        return (None, None)
    name = (root.findtext("Name") or "").strip()
    marker = (root.findtext("Biomarker") or "").strip()
    label = f"{marker} ({name})" if marker and name and marker != name else (marker or name)
    parts = (root.findtext("Color") or "").split(",")
    color = None
    if len(parts) == 3 and all(p.strip().isdigit() for p in parts):
        r, g, b = (min(255, int(p)) for p in parts)
        color = (r, g, b)
    return (label or None, color)


class ChannelLevelArray:
    """Array-like (C, h, w) view of one level of a multiplex slide for ``dask.array.from_array``.

    A request is served from the whole (cached) native tile(s) of each channel it covers.
    """

    ndim = 3

    def __init__(self, read: Callable[..., np.ndarray], level: int, lv: PyramidLevel,
                 channels: list[ChannelInfo], cache: BlockCache) -> None:  # fmt: skip
        self._read, self._level, self._cache = read, level, cache
        self.dtype = channels[0].dtype
        self.shape = (len(channels), *lv.shape)
        self._tile = lv.tile_shape

    def _tile_block(self, c: int, ty: int, tx: int) -> np.ndarray:
        key = ("multiplex", self._level, c, ty, tx)
        block = self._cache.get(key)
        if block is None:
            (th, tw), (h, w) = self._tile, self.shape[1:]
            y0, x0 = ty * th, tx * tw
            block = self._read(self._level, c, x0, y0, min(tw, w - x0), min(th, h - y0))
            self._cache.put(key, block)
        return block

    def __getitem__(self, key: tuple[slice, ...]) -> np.ndarray:
        cs = range(*key[0].indices(self.shape[0]))
        (y0, y1, _), (x0, x1, _) = key[1].indices(self.shape[1]), key[2].indices(self.shape[2])
        if y1 <= y0 or x1 <= x0 or not cs:
            return np.empty((len(cs), max(0, y1 - y0), max(0, x1 - x0)), self.dtype)
        th, tw = self._tile
        ty0, tx0 = y0 // th, x0 // tw
        rows, cols = range(ty0, (y1 - 1) // th + 1), range(tx0, (x1 - 1) // tw + 1)
        planes = [
            np.concatenate([np.concatenate([self._tile_block(c, r, t) for t in cols], axis=1) for r in rows])
            for c in cs
        ]
        return np.stack(planes)[:, y0 - ty0 * th : y1 - ty0 * th, x0 - tx0 * tw : x1 - tx0 * tw]


def channel_dask(read: Callable[..., np.ndarray], levels: list[PyramidLevel], channels: list[ChannelInfo],
                 cache: BlockCache, name: str) -> list[Any]:  # fmt: skip
    """Per level a lazy (C, h, w) dask array of the channels' native dtype, one chunk per channel and tile."""
    import dask.array as da

    out = []
    for i, lv in enumerate(levels):
        (h, w), (th, tw) = lv.shape, lv.tile_shape
        chunks = ((1,) * len(channels), _sizes(h, th), _sizes(w, tw))
        source = ChannelLevelArray(read, i, lv, channels, cache)
        meta = np.empty((0, 0, 0), source.dtype)
        out.append(da.from_array(source, chunks=chunks, name=f"{name}-L{i}", asarray=False, fancy=False,
                                 meta=meta))  # fmt: skip
    return out


def _sizes(n: int, tile: int) -> tuple[int, ...]:
    full, rest = divmod(n, tile)
    return (tile,) * full + ((rest,) if rest else ())
