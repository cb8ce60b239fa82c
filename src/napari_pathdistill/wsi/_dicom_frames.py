"""Frames of DICOM WSI instances: where each frame's bytes lie, where it sits in the total pixel matrix.

``InstanceFrames`` reads and decodes one file's frames on demand; ``TiledLevel`` places the frames of a level's
instance(s) on the tile grid (``frame_positions``: TILED_FULL row-major, else the per-frame positions).

Opening an instance walks the Pixel Data items' 8-byte headers once (no frame is read or decoded); a frame
is then read with ``os.pread`` on a descriptor of our own (no shared file position, so any number of threads
may read at once) and decoded with imagecodecs, which holds no state between calls.
"""

from __future__ import annotations

import os
import struct
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from napari_pathdistill.errors import WSIError
from napari_pathdistill.wsi._backend_utils import open_fd, to_rgb
from napari_pathdistill.wsi._dicom_positions import raw_positions

#: native (uncompressed) little-endian transfer syntaxes -> length of the Pixel Data element header
NATIVE = {"1.2.840.10008.1.2": 8, "1.2.840.10008.1.2.1": 12}
#: encapsulated transfer syntaxes -> imagecodecs decoder name
CODECS = {
    "1.2.840.10008.1.2.4.50": "jpeg8",  # JPEG baseline
    "1.2.840.10008.1.2.4.51": "jpeg8",  # JPEG extended (12 bit)
    "1.2.840.10008.1.2.4.57": "ljpeg",  # JPEG lossless
    "1.2.840.10008.1.2.4.70": "ljpeg",
    "1.2.840.10008.1.2.4.80": "jpegls",
    "1.2.840.10008.1.2.4.81": "jpegls",
    "1.2.840.10008.1.2.4.90": "jpeg2k",
    "1.2.840.10008.1.2.4.91": "jpeg2k",
    "1.2.840.10008.1.2.4.201": "jpeg2k",  # HTJ2K
    "1.2.840.10008.1.2.4.202": "jpeg2k",
    "1.2.840.10008.1.2.4.203": "jpeg2k",
    "1.2.840.10008.1.2.4.110": "jpegxl",
    "1.2.840.10008.1.2.4.111": "jpegxl",
    "1.2.840.10008.1.2.4.112": "jpegxl",
}
_ITEM, _SEQ_END = 0xE000FFFE, 0xE0DDFFFE  # (FFFE,E000) and (FFFE,E0DD) read as little-endian uint32


class InstanceFrames:
    """Random access to the decoded frames (rows, columns, 3) uint8 RGB of one DICOM file."""

    def __init__(self, path: Path, ds: Any, pixel_offset: int) -> None:
        """``ds``: the dataset read up to Pixel Data; ``pixel_offset``: file offset of the (7FE0,0010) tag."""
        self.path = path
        self.syntax = str(ds.file_meta.TransferSyntaxUID)
        self.shape = (int(ds.Rows), int(ds.Columns))
        self.n_frames = int(ds.get("NumberOfFrames", 1) or 1)
        self._photometric = str(ds.get("PhotometricInterpretation", "RGB")).upper()
        self._spp = int(ds.get("SamplesPerPixel", 3))
        self._planar = int(ds.get("PlanarConfiguration", 0) or 0)
        self._bits = int(ds.get("BitsAllocated", 8))
        self._fd: int | None
        self._fd, self._close_fd = open_fd(self, path)  # also closed when this object is collected
        self._lock = threading.Lock()  # only without os.pread (Windows): seek + read under it
        size = os.fstat(self._fd).st_size
        try:
            if self.syntax in NATIVE:
                self._ranges = self._native_ranges(pixel_offset + NATIVE[self.syntax], size)
            elif self.syntax in CODECS:
                self._ranges = self._encapsulated_ranges(pixel_offset + 12, size, ds)
            else:
                raise WSIError(
                    f"{path.name}: DICOM transfer syntax {self.syntax} is not supported (supported: "
                    "uncompressed little endian, JPEG, JPEG-LS, JPEG 2000, HTJ2K, JPEG XL)."
                )
        except BaseException:
            self.close()
            raise
        self._decode = self._decoder()

    # --- where the frames are -------------------------------------------------------------------------
    def _native_ranges(self, start: int, size: int) -> list[list[tuple[int, int]]]:
        if self._bits not in (8, 16):
            raise WSIError(f"{self.path.name}: {self._bits}-bit DICOM pixels are not supported (8 or 16).")
        n = self.shape[0] * self.shape[1] * self._spp * self._bits // 8
        if start + n * self.n_frames > size:
            raise WSIError(self._truncated(size))
        return [[(start + i * n, n)] for i in range(self.n_frames)]

    def _encapsulated_ranges(self, start: int, size: int, ds: Any) -> list[list[tuple[int, int]]]:
        """Byte ranges of each frame's fragments, from the item headers (and BOT/EOT when frames span items)."""
        items, pos = [], start
        while True:
            head = self._pread(8, pos)
            if len(head) < 8:
                raise WSIError(self._truncated(size))
            tag, length = struct.unpack("<II", head)
            if tag == _SEQ_END:
                break
            if tag != _ITEM or pos + 8 + length > size:
                raise WSIError(self._truncated(size) if tag == _ITEM else self._corrupt(pos))
            items.append((pos, pos + 8, length))
            pos += 8 + length
        if not items:
            raise WSIError(self._corrupt(start))
        bot = np.frombuffer(self._pread(items[0][2], items[0][1]), "<u4").tolist()
        fragments = items[1:]
        if len(fragments) == self.n_frames:
            return [[(off, n)] for _, off, n in fragments]
        if "ExtendedOffsetTable" in ds:
            bot = np.frombuffer(ds.ExtendedOffsetTable, "<u8").tolist()
        if len(bot) == self.n_frames:  # offsets of each frame's first item from the first fragment
            cuts = np.searchsorted([p for p, _, _ in fragments], [fragments[0][0] + int(b) for b in bot])
            bounds = [*cuts.tolist(), len(fragments)]
            return [
                [(o, n) for _, o, n in fragments[bounds[i] : bounds[i + 1]]] for i in range(self.n_frames)
            ]
        if self.n_frames == 1:
            return [[(o, n) for _, o, n in fragments]]
        return self._frames_by_end_marker(fragments)

    def _frames_by_end_marker(self, fragments: list[tuple[int, int, int]]) -> list[list[tuple[int, int]]]:
        """No offset table and several items per frame: a frame ends with the item ending in EOI/EOC (FFD9)."""
        frames: list[list[tuple[int, int]]] = [[]]
        for _, off, n in fragments:
            frames[-1].append((off, n))
            if self._pread(3, off + n - 3).rstrip(b"\x00").endswith(b"\xff\xd9"):
                frames.append([])
        frames = [f for f in frames if f]
        if len(frames) != self.n_frames:
            raise WSIError(f"{self.path.name}: {len(frames)} frames found in its pixel data, NumberOfFrames "
                           f"says {self.n_frames}; the file is corrupt.")  # fmt: skip
        return frames

    def _truncated(self, size: int) -> str:
        return (f"{self.path.name}: its pixel data runs past the end of the {size:,}-byte file; the file is "
                "truncated (copy it again).")  # fmt: skip

    def _corrupt(self, pos: int) -> str:
        return f"{self.path.name}: the pixel data is damaged at byte {pos:,} (no DICOM item there); corrupt file."

    # --- reading and decoding -------------------------------------------------------------------------
    def _pread(self, n: int, offset: int) -> bytes:
        fd = self._fd
        if fd is None:
            raise WSIError(f"{self.path.name} is closed.")
        if hasattr(os, "pread"):
            return os.pread(fd, n, offset)
        with self._lock:
            os.lseek(fd, offset, os.SEEK_SET)
            return os.read(fd, n)

    def _decoder(self) -> Callable[[bytes], np.ndarray]:
        import imagecodecs

        if self.syntax in NATIVE:
            return self._decode_native
        name = CODECS[self.syntax]
        if name == "jpeg8":
            # as OpenSlide: a JPEG of an RGB image is not colour-transformed, YBR_* is YCbCr
            cs = None if self._spp == 1 else (2 if self._photometric == "RGB" else 3)  # JCS_RGB / JCS_YCbCr
            out = None if cs is None else 2
            return lambda data: imagecodecs.jpeg8_decode(data, colorspace=cs, outcolorspace=out)
        return getattr(imagecodecs, f"{name}_decode")

    def _decode_native(self, data: bytes) -> np.ndarray:
        (r, c), s = self.shape, self._spp
        arr = np.frombuffer(data, "<u2" if self._bits == 16 else np.uint8)
        arr = arr.reshape((s, r, c)).transpose(1, 2, 0) if self._planar == 1 else arr.reshape((r, c, s))
        if self._photometric.startswith("YBR_FULL") and s == 3:
            from pydicom.pixels import convert_color_space

            arr = convert_color_space(arr, "YBR_FULL", "RGB")
        return arr

    def read(self, index: int) -> np.ndarray:
        """Frame ``index`` (0-based) as (rows, columns, 3) uint8 RGB."""
        data = b"".join(self._pread(n, off) for off, n in self._ranges[index])
        try:
            arr = np.asarray(self._decode(data))
        except Exception as exc:
            raise WSIError(
                f"{self.path.name}: frame {index + 1} cannot be decoded ({exc}); corrupt file."
            ) from exc
        if self._photometric == "MONOCHROME1":
            arr = np.iinfo(arr.dtype).max - arr
        rgb = to_rgb(arr)
        if rgb.shape[:2] != self.shape:
            raise WSIError(f"{self.path.name}: frame {index + 1} decodes to {rgb.shape[1]}x{rgb.shape[0]}, "
                           f"not the {self.shape[1]}x{self.shape[0]} of its header; corrupt file.")  # fmt: skip
        return rgb

    def close(self) -> None:
        self._fd = None
        self._close_fd()


def frame_positions(ds: Any, n_frames: int) -> list[tuple[int, int, int]]:
    """(frame index, x0, y0) in total-pixel-matrix pixels of the frames of the first plane/optical path."""
    th, tw = int(ds.Rows), int(ds.Columns)
    sparse = ds.get("DimensionOrganizationType") != "TILED_FULL" and n_frames > 1
    if (
        sparse and (fast := raw_positions(ds, n_frames)) is not None
    ):  # no Dataset per frame (_dicom_positions)
        return fast
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    if sparse and per_frame:
        out, first = [], None
        for i, item in enumerate(per_frame[:n_frames]):
            try:
                pos = item.PlanePositionSlideSequence[0]
                x, y = (
                    int(pos.ColumnPositionInTotalImagePixelMatrix),
                    int(pos.RowPositionInTotalImagePixelMatrix),
                )
            except (AttributeError, IndexError, KeyError, TypeError, ValueError) as exc:
                raise WSIError(f"frame {i + 1} has no PlanePositionSlideSequence position ({exc})") from None
            paths = item.get("OpticalPathIdentificationSequence") or [{}]
            plane = (pos.get("ZOffsetInSlideCoordinateSystem"), paths[0].get("OpticalPathIdentifier"))
            first = plane if first is None else first
            if plane == first:
                out.append((i, x - 1, y - 1))
        return out
    across = -(-int(ds.get("TotalPixelMatrixColumns", tw)) // tw)
    down = -(-int(ds.get("TotalPixelMatrixRows", th)) // th)
    offset = int(ds.get("ConcatenationFrameOffsetNumber", 0) or 0)
    return [(i, (g % across) * tw, (g // across) * th)
            for i, g in enumerate(range(offset, offset + n_frames)) if g < across * down]  # fmt: skip


class TiledLevel:
    """One pyramid level: its instance parts and, per tile-grid cell, the frames that cover it."""

    def __init__(self, instances: list[tuple[Path, Any, int]]) -> None:
        """``instances``: (path, dataset up to Pixel Data, file offset of Pixel Data) of each part."""
        ds = instances[0][1]
        self.tile = (int(ds.Rows), int(ds.Columns))
        self.shape = (
            int(ds.get("TotalPixelMatrixRows", ds.Rows)),
            int(ds.get("TotalPixelMatrixColumns", ds.Columns)),
        )
        self.parts: list[InstanceFrames] = []
        self.cells: dict[tuple[int, int], list[tuple[int, int, int, int]]] = {}
        try:
            for path, ds_part, offset in instances:
                frames = InstanceFrames(path, ds_part, offset)
                self.parts.append(frames)
                try:
                    positions = frame_positions(ds_part, frames.n_frames)
                except WSIError as exc:
                    raise WSIError(f"{path.name}: {exc}; the file is corrupt.") from None
                self._index(len(self.parts) - 1, positions)
        except BaseException:
            self.close()
            raise

    def _index(self, part: int, positions: list[tuple[int, int, int]]) -> None:
        (th, tw), (h, w) = self.tile, self.shape
        for frame, x, y in positions:
            ya, yb, xa, xb = max(y, 0), min(y + th, h), max(x, 0), min(x + tw, w)
            if yb <= ya or xb <= xa:
                continue  # wholly outside the total pixel matrix
            for r in range(ya // th, (yb - 1) // th + 1):
                for c in range(xa // tw, (xb - 1) // tw + 1):
                    self.cells.setdefault((r, c), []).append((part, frame, x, y))

    def read(self, x: int, y: int, w: int, h: int) -> np.ndarray:
        """(h, w, 3) uint8 window at level pixels (x, y); outside the matrix and missing frames white."""
        out = np.full((h, w, 3), 255, np.uint8)
        (th, tw), (lh, lw) = self.tile, self.shape
        x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + w, lw), min(y + h, lh)
        if x1 <= x0 or y1 <= y0:
            return out
        seen: set[tuple[int, int]] = set()
        for r in range(y0 // th, (y1 - 1) // th + 1):
            for c in range(x0 // tw, (x1 - 1) // tw + 1):
                for part, frame, fx, fy in self.cells.get((r, c), ()):
                    if (part, frame) in seen:
                        continue
                    seen.add((part, frame))
                    sx0, sy0, sx1, sy1 = max(x0, fx), max(y0, fy), min(x1, fx + tw), min(y1, fy + th)
                    if sx1 > sx0 and sy1 > sy0:
                        tile = self.parts[part].read(frame)
                        out[sy0 - y : sy1 - y, sx0 - x : sx1 - x] = tile[
                            sy0 - fy : sy1 - fy, sx0 - fx : sx1 - fx
                        ]
        return out

    def close(self) -> None:
        for part in self.parts:
            part.close()
