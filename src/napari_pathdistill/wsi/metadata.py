"""What a pathologist checks first about a slide: scanner, objective, um/px, pyramid, associated images, ICC.

:func:`slide_metadata` gathers the facts of an open :class:`~napari_pathdistill.wsi.pyramid.Pyramid` into a
:class:`SlideMetadata`; :func:`metadata_rows` words them for display (the napari metadata panel shows exactly
these rows). OpenSlide slides are described from OpenSlide's standard properties (``openslide.vendor``,
``openslide.objective-power``, ``openslide.mpp-x``/``-y``); TIFFs read by tifffile from their OME-XML
(``NominalMagnification``, ``Microscope``/``Creator``) or TIFF tags (Software, Make/Model).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from napari_pathdistill.wsi.icc import profile_description

__all__ = ["LevelInfo", "SlideMetadata", "metadata_rows", "slide_metadata"]

#: shown instead of an MPP when the file states none
NO_MPP = "no MPP: shown in pixels"


@dataclass(frozen=True)
class LevelInfo:
    """One pyramid level: size in pixels, downsample from level 0 and native tile size."""

    width: int
    height: int
    downsample: float
    tile: tuple[int, int]  # (height, width)


@dataclass(frozen=True)
class SlideMetadata:
    """The facts of one slide (None where the file does not say)."""

    path: Path
    backend: str
    vendor: str | None
    objective_power: float | None
    mpp: tuple[float, float] | None  # (y, x) um/px at level 0
    levels: tuple[LevelInfo, ...]
    associated: tuple[str, ...]
    icc_profile: str | None  # the profile's description; None when the slide has none
    color: str = "raw"  # "raw" or "srgb" (converted with the ICC profile)
    scanner: str | None = None
    extra: dict[str, str] = field(default_factory=dict)
    #: channel names of a multiplex immunofluorescence slide (shown one layer each); empty for brightfield RGB
    channels: tuple[str, ...] = ()

    @property
    def has_mpp(self) -> bool:
        """Whether the slide has a pixel size (else napari shows it in pixels)."""
        return self.mpp is not None


def _float(value: Any) -> float | None:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if out > 0 else None


def _dicom(props: dict[str, str], key: str) -> str | None:
    """A DICOM attribute as OpenSlide lists it (``dicom.<key>``); None when empty or the converters' "Unknown"."""
    value = props.get(f"dicom.{key}", "").strip()
    return value if value and value.lower() != "unknown" else None


def _openslide_facts(props: dict[str, str]) -> tuple[str | None, float | None, str | None]:
    vendor = props.get("openslide.vendor")
    dicom_scanner = " ".join(
        filter(None, (_dicom(props, "Manufacturer"), _dicom(props, "ManufacturerModelName")))
    )
    scanner = (
        props.get("aperio.ScanScope ID")
        or props.get("hamamatsu.Product")
        or props.get("leica.device-model")
        or dicom_scanner
    )
    power = props.get("openslide.objective-power") or _dicom(
        props, "OpticalPathSequence[0].ObjectiveLensPower"
    )
    return vendor, _float(power), scanner or None


def _scan_date(props: dict[str, str]) -> str | None:
    """When the slide was scanned: an SVS's ``aperio.Date`` as written, a DICOM's AcquisitionDateTime
    (YYYYMMDDHHMMSS...) as ``YYYY-MM-DD HH:MM:SS``; None when the file does not say."""
    if props.get("aperio.Date"):
        return props["aperio.Date"]
    m = re.match(r"(\d{4})(\d\d)(\d\d)(?:(\d\d)(\d\d)(\d\d)?)?", _dicom(props, "AcquisitionDateTime") or "")
    if m is None:
        return None
    date, hh, mm, ss = "-".join(m.groups()[:3]), *m.groups()[3:]
    return f"{date} {hh}:{mm}" + (f":{ss}" if ss else "") if hh else date


def _ome_attr(xml: str, element: str, attr: str) -> str | None:
    m = re.search(rf"<(?:\w+:)?{element}\b[^>]*?\b{attr}=\"([^\"]*)\"", xml)
    return m.group(1) if m and m.group(1).strip() else None


def _tag_text(page: Any, code: int) -> str | None:
    tag = page.tags.get(code)
    text = str(tag.value).strip() if tag is not None else ""
    return text or None


def _tifffile_facts(path: Path) -> tuple[str | None, float | None, str | None]:
    """(vendor, objective power, scanner) of a TIFF from its OME-XML or TIFF tags; never raises."""
    import tifffile

    try:
        with tifffile.TiffFile(str(path)) as tif:
            xml, page = tif.ome_metadata or "", tif.pages.first
            creator = _ome_attr(xml, "OME", "Creator") or _tag_text(page, 305)  # Software
            make_model = " ".join(filter(None, (_tag_text(page, 271), _tag_text(page, 272))))
    except Exception:
        return None, None, None
    microscope = " ".join(filter(None, (_ome_attr(xml, "Microscope", k) for k in ("Manufacturer", "Model"))))
    vendor = "OME-TIFF" if xml else "TIFF"
    power = _float(_ome_attr(xml, "Objective", "NominalMagnification"))
    return (f"{vendor} ({creator})" if creator else vendor), power, microscope or make_model or None


def slide_metadata(pyramid: Any) -> SlideMetadata:
    """The facts of an open slide for display; reads no pixels (a TIFF's tags are re-read from its file; opening a
    TIFF of more than 8 bits without a stated white decodes a few coarsest-level tiles: ``_sample_range``).

    Args:
        pyramid: a :class:`~napari_pathdistill.wsi.pyramid.Pyramid`.

    Returns:
        The :class:`SlideMetadata`.
    """
    props = dict(pyramid.properties)
    if pyramid.backend == "tifffile" or props.get("openslide.vendor") == "generic-tiff":
        vendor, power, scanner = _tifffile_facts(Path(pyramid.path))
    else:
        vendor, power, scanner = _openslide_facts(props)
    levels = tuple(
        LevelInfo(
            width=lv.shape[1], height=lv.shape[0], downsample=float(lv.downsample), tile=tuple(lv.tile_shape)
        )
        for lv in pyramid.levels
    )
    found = {"scan date": _scan_date(props), "pixel values": props.get("pathdistill.sample-range")}
    extra = {label: value for label, value in found.items() if value}
    return SlideMetadata(
        path=Path(pyramid.path),
        backend=pyramid.backend,
        vendor=vendor or None,
        objective_power=power,
        mpp=tuple(pyramid.mpp) if pyramid.mpp else None,  # type: ignore[arg-type]
        levels=levels,
        associated=tuple(pyramid.associated_image_names()),
        icc_profile=profile_description(getattr(pyramid, "icc_profile", None)),
        color=getattr(pyramid, "color", "raw"),
        scanner=scanner,
        extra=extra,
        channels=tuple(ch.name for ch in getattr(pyramid, "channels", None) or ()),
    )


def _level_text(i: int, lv: LevelInfo) -> str:
    return f"{i}: {lv.width} x {lv.height} px, downsample {lv.downsample:.4g}"


def metadata_rows(meta: SlideMetadata) -> list[tuple[str, str]]:
    """(label, text) rows for display, in the panel's order; absent facts read ``not stated``."""
    unknown = "not stated"
    mpp = f"{meta.mpp[1]:.4g} x {meta.mpp[0]:.4g} um/px (x, y)" if meta.mpp else NO_MPP
    icc = f"present ({meta.icc_profile})" if meta.icc_profile else "absent (raw RGB shown)"
    if meta.channels and not meta.icc_profile:
        icc = "absent"  # the channels are shown with colormaps, not as RGB
    if meta.icc_profile and meta.color == "srgb":
        icc += ", converted to sRGB"
    rows = [
        ("file", meta.path.name),
        ("backend", meta.backend),
        ("vendor", meta.vendor or unknown),
        ("scanner", meta.scanner or unknown),
        ("objective", f"{meta.objective_power:g}x" if meta.objective_power else unknown),
        ("MPP", mpp),
        ("levels", "\n".join(_level_text(i, lv) for i, lv in enumerate(meta.levels))),
        ("associated", ", ".join(meta.associated) or "none"),
        ("ICC profile", icc),
    ]
    if meta.channels:  # multiplex: what each of its layers shows
        rows.insert(6, ("channels", f"{len(meta.channels)}: {', '.join(meta.channels)}"))
    return rows + [(k, v) for k, v in meta.extra.items()]
