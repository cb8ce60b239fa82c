"""Multiplex immunofluorescence TIFF writers (tifffile) for the multiplex tests: OME-TIFF and QPTIFF layouts.

Channel pixels are random, so a read of the wrong channel, level or tile cannot match by chance.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

NAMES = ("DAPI", "CD3", "CD8", "PanCK")
#: display colours (r, g, b) of NAMES
COLOURS = ((0, 0, 255), (255, 0, 0), (0, 255, 0), (255, 255, 0))
MPP = 0.5
TILE = 256


def channel_levels(dtype: str, shape: tuple[int, int] = (1100, 900), n_levels: int = 3, seed: int = 0
                   ) -> list[np.ndarray]:  # fmt: skip
    """Per level a (C, h, w) array; level k is level 0 subsampled by 2**k (floor halving, as QPTIFF does)."""
    rng = np.random.default_rng(seed)
    top = rng.integers(0, np.iinfo(dtype).max, (len(NAMES), *shape), dtype=dtype, endpoint=True)
    return [np.ascontiguousarray(top[:, :: 2**k, :: 2**k][:, : shape[0] >> k, : shape[1] >> k])
            for k in range(n_levels)]  # fmt: skip


def ome_color(rgb: tuple[int, int, int]) -> int:
    """OME ``Color``: RGBA as a signed 32-bit integer (alpha 255)."""
    v = (rgb[0] << 24) | (rgb[1] << 16) | (rgb[2] << 8) | 255
    return v - 2**32 if v >= 2**31 else v


def write_ome_multiplex(path: Path, levels: list[np.ndarray], *, colours: bool = True) -> Path:
    """A CYX OME-TIFF pyramid (SubIFDs), channels named NAMES (coloured COLOURS), MPP um/px."""
    import tifffile

    channel: dict = {"Name": list(NAMES)}
    if colours:
        channel["Color"] = [ome_color(c) for c in COLOURS]
    md = {"axes": "CYX", "Channel": channel, "PhysicalSizeX": MPP, "PhysicalSizeY": MPP,
          "PhysicalSizeXUnit": "µm", "PhysicalSizeYUnit": "µm"}  # fmt: skip
    kw = {"tile": (TILE, TILE), "compression": "zlib", "photometric": "minisblack"}
    with tifffile.TiffWriter(path, ome=True) as tw:
        tw.write(levels[0], subifds=len(levels) - 1, metadata=md, **kw)
        for lv in levels[1:]:
            tw.write(lv, subfiletype=1, **kw)
    return path


def _qpi_xml(image_type: str, name: str = "", colour: tuple[int, int, int] | None = None,
             biomarker: str = "") -> str:  # fmt: skip
    color = f"<Color>{','.join(map(str, colour))}</Color>" if colour else ""
    marker = f"<Biomarker>{biomarker}</Biomarker>" if biomarker else ""
    return (
        '<?xml version="1.0" encoding="utf-16"?>\r\n<PerkinElmer-QPI-ImageDescription>'
        f"<DescriptionVersion>2</DescriptionVersion><ImageType>{image_type}</ImageType>"
        f"<Identifier>1</Identifier><Name>{name}</Name>{marker}{color}"
        "</PerkinElmer-QPI-ImageDescription>"
    )


def write_qptiff(path: Path, levels: list[np.ndarray], biomarkers: tuple[str, ...] | None = None) -> Path:
    """A QPTIFF laid out as Akoya/PerkinElmer write it, all top-level IFDs, ``Software: PerkinElmer-QPI``.

    Full-resolution channel pages, an RGB thumbnail, reduced-resolution channel pages (each level half the
    previous), then an overview (macro) and a label image; every page's ImageDescription is a
    ``<PerkinElmer-QPI-ImageDescription>`` with its ImageType, the channel Name (+ Biomarker) and "r,g,b" Color.
    """
    import tifffile

    def page(tw, data, image_type, c=None, **kw) -> None:
        name = NAMES[c] if c is not None else ""
        colour = COLOURS[c] if c is not None else None
        marker = biomarkers[c] if (biomarkers and c is not None) else ""
        tw.write(data, software="PerkinElmer-QPI", description=_qpi_xml(image_type, name, colour, marker),
                 metadata=None, **kw)  # fmt: skip

    tiled = {"tile": (TILE, TILE), "compression": "zlib", "photometric": "minisblack"}
    rgb = {"photometric": "rgb", "compression": "zlib"}
    res = {"resolution": (1e4 / MPP, 1e4 / MPP), "resolutionunit": "CENTIMETER"}
    with tifffile.TiffWriter(path, bigtiff=True) as tw:
        for c in range(len(NAMES)):
            page(tw, levels[0][c], "FullResolution", c, **tiled, **res)
        page(tw, np.full((64, 52, 3), 40, np.uint8), "Thumbnail", **rgb)
        for k, lv in enumerate(levels[1:], start=1):
            lres = {"resolution": (1e4 / (MPP * 2**k),) * 2, "resolutionunit": "CENTIMETER"}
            for c in range(len(NAMES)):
                page(tw, lv[c], "ReducedResolution", c, **tiled, **lres)
        page(tw, np.full((120, 300, 3), 200, np.uint8), "Overview", **rgb)
        page(tw, np.full((80, 80, 3), 255, np.uint8), "Label", **rgb)
    return path
