"""A big pyramidal JPEG-tiled TIFF of real tissue, for slide-scale benchmarks (not for unit tests).

``write_big_slide(path, width, height)`` mosaics real H&E from ``../shared/data`` (the CMU and TCGA slides)
into a few elliptical tissue islands on a glass-coloured background and writes it as a tiled JPEG pyramid
(levels downsampled by 2 down to <= 2048 px, SubIFDs, MPP in the resolution tags), tile by tile: memory stays
a few tiles whatever the size. Each level is rendered from the sources at that level's scale, so levels agree
(up to resampling). 40,000 x 30,000 px takes about a minute on one core; the file is ~0.3-0.6 GB.

Usage: ``python benchmarks/_big_slide.py /tmp/big.tif --width 40000 --height 30000``.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from _data import DATA

TILE = 256
GLASS = np.array([236, 234, 240], np.float32)


def _sources(data: Path) -> list[np.ndarray]:
    """Real tissue crops (h, w, 3) uint8 at level 0 from the shared slides."""
    from napari_pathdistill.wsi import open_pyramid

    out = []
    for name in ("CMU-1-Small-Region.svs", "tcga-cr-7395-01a-01-ts1.svs"):
        with open_pyramid(data / "wsi" / name) as pyr:
            h, w = pyr.levels[0].shape
            out.append(_densest_window(np.ascontiguousarray(pyr.read_region((0, 0), 0, (w, h))[..., :3])))
    return out


def _densest_window(rgb: np.ndarray, side: int = 1024) -> np.ndarray:
    """The ``side`` x ``side`` window of ``rgb`` richest in tissue, mirrored to (2 side, 2 side): it wraps seamlessly."""
    from napari_pathdistill.wsi.tissue import tissue_mask_from_rgb

    k = 16
    mask = tissue_mask_from_rgb(rgb[::k, ::k]).astype(np.float64)
    s = side // k
    sat = np.pad(mask.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    frac = sat[s:, s:] - sat[:-s, s:] - sat[s:, :-s] + sat[:-s, :-s]
    y, x = np.unravel_index(int(np.argmax(frac)), frac.shape)
    win = rgb[y * k : y * k + side, x * k : x * k + side]
    win = np.concatenate([win, win[::-1]], axis=0)
    return np.ascontiguousarray(np.concatenate([win, win[:, ::-1]], axis=1))


def island_layout(width: int, height: int, n: int = 6, seed: int = 0) -> np.ndarray:
    """(n, 5) ellipses (cy, cx, ry, rx, source index) in level-0 px covering ~35 % of the slide.

    The paste layout :func:`write_big_slide` uses for the same arguments (tests check detection against it).
    """
    rng = np.random.default_rng(seed)
    cols = int(np.ceil(np.sqrt(n * width / height)))
    rows = int(np.ceil(n / cols))
    cell_h, cell_w = height / rows, width / cols
    out = []
    for i in range(n):
        r, c = divmod(i, cols)
        cy, cx = (r + rng.uniform(0.4, 0.6)) * cell_h, (c + rng.uniform(0.4, 0.6)) * cell_w
        out.append((cy, cx, cell_h * rng.uniform(0.3, 0.42), cell_w * rng.uniform(0.3, 0.42), i % 2))
    return np.array(out)


def _tiles(shape: tuple[int, int], ds: int, islands: np.ndarray, sources: list[np.ndarray],
           rng: np.random.Generator) -> Iterator[np.ndarray]:  # fmt: skip
    """Row-major (TILE, TILE, 3) uint8 tiles of one level (downsample ``ds``)."""
    h, w = shape
    noise = rng.normal(0, 2.0, (TILE, TILE, 3)).astype(np.float32)
    for ty in range(0, h, TILE):
        yy = (ty + np.arange(TILE)) * ds
        for tx in range(0, w, TILE):
            xx = (tx + np.arange(TILE)) * ds
            tile = GLASS + noise
            for cy, cx, ry, rx, s in islands:
                if abs(yy.mean() - cy) > ry + TILE * ds or abs(xx.mean() - cx) > rx + TILE * ds:
                    continue
                inside = ((yy[:, None] - cy) / ry) ** 2 + ((xx[None, :] - cx) / rx) ** 2 <= 1.0
                if inside.any():
                    src = sources[int(s)]
                    crop = src[yy % src.shape[0]][:, xx % src.shape[1]].astype(np.float32)
                    tile = np.where(inside[..., None], crop, tile)
            yield np.clip(tile, 0, 255).astype(np.uint8)


def in_islands(x: np.ndarray, y: np.ndarray, islands: np.ndarray, margin: float = 0.0) -> np.ndarray:
    """Boolean array: level-0 points (x, y) inside an island (ellipse radii grown by ``margin`` px)."""
    x, y = np.asarray(x, np.float64)[..., None], np.asarray(y, np.float64)[..., None]
    cy, cx, ry, rx = (islands[:, i] for i in range(4))
    return np.any(((y - cy) / (ry + margin)) ** 2 + ((x - cx) / (rx + margin)) ** 2 <= 1.0, axis=-1)


def write_big_slide(path: str | Path, width: int = 40_000, height: int = 30_000, *, mpp: float = 0.25,
                    n_islands: int = 6, seed: int = 0, quality: int = 85, data: Path = DATA,
                    compression: str = "jpeg") -> Path:  # fmt: skip
    """Write a ``width`` x ``height`` pyramidal JPEG TIFF of real tissue islands on glass; returns ``path``.

    Level k (downsample 2**k) samples the sources every 2**k px (nearest), so every level shows the same
    islands; levels stop at the first one whose longer side is <= 2048. ``compression="zlib"`` (level 1,
    lossless) writes and reads without imagecodecs, for machines that lack it (the lent GPU machine).
    """
    import tifffile

    sources, islands = _sources(data), island_layout(width, height, n_islands, seed)
    shapes = [(height, width)]
    while max(shapes[-1]) > 2048:
        shapes.append((shapes[-1][0] // 2, shapes[-1][1] // 2))
    kw = {
        "tile": (TILE, TILE),
        "compression": compression,
        "compressionargs": {"level": quality if compression == "jpeg" else 1},
        "photometric": "rgb",
        "dtype": np.uint8,
    }
    res = {"resolution": (1e4 / mpp, 1e4 / mpp), "resolutionunit": "CENTIMETER"}
    rng = np.random.default_rng(seed)
    with tifffile.TiffWriter(path, bigtiff=True) as tw:
        for k, (h, w) in enumerate(shapes):
            tiles = _tiles((h, w), 2**k, islands, sources, rng)
            if k == 0:
                tw.write(tiles, shape=(h, w, 3), subifds=len(shapes) - 1, **res, **kw)
            else:
                tw.write(tiles, shape=(h, w, 3), subfiletype=1, **kw)
    return Path(path)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("path", type=Path)
    p.add_argument("--width", type=int, default=40_000)
    p.add_argument("--height", type=int, default=30_000)
    p.add_argument("--mpp", type=float, default=0.25)
    p.add_argument("--compression", choices=("jpeg", "zlib"), default="jpeg")
    a = p.parse_args(argv)
    write_big_slide(a.path, a.width, a.height, mpp=a.mpp, compression=a.compression)
    print(f"wrote {a.path} ({a.path.stat().st_size / 2**20:.0f} MiB)")


if __name__ == "__main__":
    main()
