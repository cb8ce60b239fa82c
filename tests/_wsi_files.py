"""Pyramidal TIFF writers for the WSI tests (tifffile), shared by tests/wsi, tests/_qt and the reader tests."""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np

SPARSE_SIDE = 100_000
SPARSE_TILE = 256
#: tile indices (row-major, level 0) that hold data in the sparse TIFF; every other tile is empty
SPARSE_FILLED = (0, 5, 391 * 200 + 200)
SPARSE_COLOUR = (200, 100, 150)


def _sparse_tiles(shape: tuple[int, int, int], filled: tuple[int, ...]) -> Iterator[np.ndarray | None]:
    n = (-(-shape[0] // SPARSE_TILE)) * (-(-shape[1] // SPARSE_TILE))
    tile = np.empty((SPARSE_TILE, SPARSE_TILE, 3), np.uint8)
    tile[:] = SPARSE_COLOUR
    for i in range(n):
        yield tile if (i in filled or i == 0) else None


def write_sparse_tiff(path: Path, side: int = SPARSE_SIDE, mpp: float = 0.25) -> Path:
    """A side x side RGB pyramid (SubIFDs, 4 levels) where all but a few tiles are empty (sparse)."""
    import tifffile

    kw = {"dtype": np.uint8, "tile": (SPARSE_TILE, SPARSE_TILE), "compression": "zlib", "photometric": "rgb"}
    with tifffile.TiffWriter(path, bigtiff=True) as tw:
        shape = (side, side, 3)
        res = {"resolution": (1e4 / mpp, 1e4 / mpp), "resolutionunit": "CENTIMETER"}
        tw.write(_sparse_tiles(shape, SPARSE_FILLED), shape=shape, subifds=3, **res, **kw)
        for k in (1, 2, 3):
            shape = (side >> k, side >> k, 3)
            tw.write(_sparse_tiles(shape, ()), shape=shape, subfiletype=1, **kw)
    return path


def write_pyramid_tiff(path: Path, image: np.ndarray, *, levels: int = 3, tile: int = 128, mpp: float | None = 0.5,
                       ome: bool = False) -> list[np.ndarray]:  # fmt: skip
    """Write ``image`` (h, w, 3) as a tiled JPEG-free (zlib) pyramid with SubIFDs; returns the level arrays."""
    import tifffile

    pyramid = [image]
    for _ in range(1, levels):
        prev = pyramid[-1]
        h, w = prev.shape[0] // 2 * 2, prev.shape[1] // 2 * 2
        pyramid.append(prev[:h:2, :w:2].copy())
    kw = {"tile": (tile, tile), "compression": "zlib", "photometric": "rgb"}
    with tifffile.TiffWriter(path, bigtiff=False, ome=ome) as tw:
        res = {} if mpp is None else {"resolution": (1e4 / mpp, 1e4 / mpp), "resolutionunit": "CENTIMETER"}
        meta = {"PhysicalSizeX": mpp, "PhysicalSizeY": mpp} if (ome and mpp) else None
        tw.write(pyramid[0], subifds=levels - 1, metadata=meta, **res, **kw)
        for lvl in pyramid[1:]:
            tw.write(lvl, subfiletype=1, metadata=None, **kw)
    return pyramid


def write_turned_pair(
    out: Path, a: np.ndarray, mpp_a: float, degrees: float, mpp_b: float, mirror: bool = False
) -> tuple[Path, Path, np.ndarray]:
    """A known slide pair: ``a`` (h, w, 3) at ``mpp_a`` and the same tissue turned by ``degrees`` about its centre
    (first mirrored left to right when ``mirror``: a section laid face down), 40 um further right and down,
    "rescanned" at ``mpp_b`` (bilinear). Single-level TIFFs (no decimated levels: exact pixels). Returns (path A,
    path B, (3, 3) A level-0 px (x, y) -> B level-0 px, pixel centres)."""
    from skimage.transform import AffineTransform, warp

    t = np.deg2rad(degrees)
    flip = np.diag([-1.0 if mirror else 1.0, 1.0])
    rot = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]]) @ flip
    centre = np.array(a.shape[1::-1]) * mpp_a / 2
    um = np.eye(3)  # A um -> B um
    um[:2, :2], um[:2, 2] = rot, centre + 40.0 - rot @ centre
    a_to_b = np.diag([1 / mpp_b, 1 / mpp_b, 1]) @ um @ np.diag([mpp_a, mpp_a, 1])
    side_b = int(max(a.shape[:2]) * mpp_a / mpp_b * 1.25)
    b = warp(
        a, AffineTransform(matrix=np.linalg.inv(a_to_b)), output_shape=(side_b, side_b), order=1, cval=1.0
    )
    write_pyramid_tiff(out / "a.tif", a, mpp=mpp_a, levels=1)
    write_pyramid_tiff(out / "b.tif", np.clip(np.rint(b * 255), 0, 255).astype(np.uint8), mpp=mpp_b, levels=1)
    return out / "a.tif", out / "b.tif", a_to_b


def write_png16(path: Path, arr: np.ndarray) -> None:
    """(h, w, 3|4) uint16 -> a 16-bit RGB / RGBA PNG (Pillow cannot write those)."""
    h, w, c = arr.shape
    raw = b"".join(b"\x00" + row.astype(">u2").tobytes() for row in arr)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", w, h, 16, {3: 2, 4: 6}[c], 0, 0, 0)
    body = chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + body)


def corrupt_tiles(path: Path, page_offsets: np.ndarray, indices: tuple[int, ...]) -> None:
    """Zero the first 64 bytes (SOI and headers) of the given JPEG tiles: they cannot be decoded."""
    with path.open("r+b") as fh:
        for i in indices:
            fh.seek(int(page_offsets[i]))
            fh.write(b"\0" * 64)


def corrupt_svs_copy(src: Path, dst: Path, indices: tuple[int, ...]) -> Path:
    """A copy of the SVS ``src`` at ``dst`` whose level-0 tiles ``indices`` cannot be decoded."""
    import shutil

    import tifffile

    shutil.copy(src, dst)
    with tifffile.TiffFile(dst) as tif:
        offsets = tif.pages[0].dataoffsets
    corrupt_tiles(dst, offsets, indices)
    return dst
