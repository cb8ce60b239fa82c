"""napari reader: whole-slide images as lazy multiscale RGB image layers in micrometres.

``get_reader`` only looks at the path (extension, TIFF magic bytes, OpenSlide's format sniffing) and never
raises. The returned callable opens the slide with :func:`napari_pathdistill.wsi.open_pyramid`; problems found
then (corrupt, truncated, not pyramidal and too large) raise :class:`WSIError` with a message saying what to
do, which napari shows as a notification.

Associated images (label, macro, thumbnail) are not added by default; set the environment variable
``PATHDISTILL_ASSOCIATED=label,macro`` (or ``all``) to add them as extra layers, or use
:func:`associated_layers` (the tissue widget's button and ``pathdistill view --associated``).
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from napari_pathdistill._channel_layers import CHANNEL_COLORMAPS, channel_layers
from napari_pathdistill.errors import WSIError

LayerData = tuple[Any, dict[str, Any], str]
__all__ = ["CHANNEL_COLORMAPS", "associated_layers", "channel_layers", "get_reader", "read_slide"]

SUFFIXES = (
    ".svs",
    ".tif",
    ".tiff",
    ".ndpi",
    ".mrxs",
    ".scn",
    ".bif",
    ".vms",
    ".vmu",
    ".svslide",
    ".dcm",
    ".btf",
    ".qptiff",  # Akoya/PerkinElmer multiplex immunofluorescence (one layer per channel)
    # read by the optional fastslide backend (without it, opening says how to install it)
    ".vsi",
    ".czi",
    ".isyntax",
    ".i2syntax",
)
#: a slide whose coarsest level has more pixels than this is refused: napari loads a multiscale layer's
#: coarsest level whole (its thumbnail), and a single-level image is all coarsest level
MAX_FLAT_PIXELS = 10_000 * 10_000


def _looks_readable(path: Path) -> bool:
    from napari_pathdistill.wsi._dicom_backend import is_dicom
    from napari_pathdistill.wsi._formats import _is_tiff
    from napari_pathdistill.wsi._openslide_backend import detect_vendor

    if _denied(path):  # read_slide then says "permission denied", not napari's "no reader"
        return path.suffix.lower() in SUFFIXES
    if path.is_dir():  # a DICOM folder OpenSlide refuses (no ImageType, no VOLUME) gets the reader's message,
        # and so does a folder named like a slide (``x.svs/``, an archive unpacked): it says which file to open
        return path.suffix.lower() in SUFFIXES or detect_vendor(path) is not None or is_dicom(path)
    if not path.is_file() or path.suffix.lower() not in SUFFIXES:
        return False  # also a FIFO, socket or device: never opened here (a read would block)
    if path.stat().st_size == 0:  # no reader can: read_slide says it is empty, not napari's "refused"
        return True
    if path.suffix.lower() in (".tif", ".tiff", ".btf", ".qptiff"):
        return _is_tiff(path) or detect_vendor(path) is not None
    return True  # vendor formats: let the reader give a clear error if the file is broken


def _denied(path: Path) -> bool:
    """Whether ``path`` exists but this user may not stat or read it."""
    try:
        path.stat()
    except PermissionError:
        return True
    except OSError:
        return False
    return not path.is_dir() and path.is_file() and not os.access(path, os.R_OK)


def get_reader(path: str | list[str]) -> Callable[[str | list[str]], list[LayerData]] | None:
    """Return :func:`read_slide` if ``path`` looks like a slide we can open, else None. Never raises."""
    try:
        if isinstance(path, list):
            if len(path) != 1:
                return None
            path = path[0]
        return read_slide if _looks_readable(Path(path)) else None
    except Exception:
        return None


def slide_layer_kwargs(pyramid: Any, name: str | None = None) -> dict[str, Any]:
    """napari ``add_image`` keyword arguments for a slide (scale/units in um when MPP is known)."""
    meta = {
        "path": str(pyramid.path),
        "mpp": pyramid.mpp,
        "backend": pyramid.backend,
        "levels": [(lv.shape, lv.downsample) for lv in pyramid.levels],
        "icc_profile": getattr(pyramid, "icc_profile", None) is not None,
        "color": getattr(pyramid, "color", "raw"),
    }
    kwargs: dict[str, Any] = {
        "name": name or pyramid.path.name,
        "rgb": True,
        "multiscale": True,
        "metadata": {"pathdistill": meta},
        "contrast_limits": (0, 255),
    }
    if pyramid.mpp is not None:
        kwargs["scale"] = tuple(pyramid.mpp)
        kwargs["units"] = ("um", "um")
    return kwargs


def _maybe_srgb(pyramid: Any) -> None:
    """Convert to sRGB with the slide's ICC profile when ``PATHDISTILL_COLOR=srgb`` (``view --srgb``).

    A damaged profile warns and leaves the slide raw instead of refusing to open it.
    """
    if os.environ.get("PATHDISTILL_COLOR", "raw").strip().lower() != "srgb":
        return
    try:
        pyramid.use_srgb()
    except WSIError as exc:
        warnings.warn(str(exc), UserWarning, stacklevel=3)


def _check_displayable(pyramid: Any) -> None:
    """Refuse a slide whose coarsest level napari would have to load whole into memory (> MAX_FLAT_PIXELS)."""
    h, w = pyramid.levels[-1].shape
    if h * w <= MAX_FLAT_PIXELS:
        return
    convert = ("Convert it to a pyramidal TIFF first, e.g. `vips tiffsave in.tif out.tif --tile --pyramid "
               "--compression jpeg`; `pathdistill tiles` can still tile it.")  # fmt: skip
    size = getattr(pyramid, "truncated_at", None)
    if size is not None and getattr(pyramid, "lost_levels", True):  # lost its smaller levels: no vips
        intact = ", ".join(f"{lv.shape[1]}x{lv.shape[0]}" for lv in pyramid.levels)
        raise WSIError(
            f"{pyramid.path.name} is truncated (the file ends at byte {size:,}); its intact level(s): {intact} px, "
            f"and napari would have to load the smallest whole ({h * w * 3 / 2**30:.1f} GiB as RGB). Its smaller "
            "levels are lost: copy the file again. `pathdistill tiles` can still tile what is intact."
        )
    if len(pyramid.levels) == 1:
        raise WSIError(
            f"{pyramid.path.name} is a {w}x{h} image without a pyramid: napari would have to load it whole. "
            + convert
        )
    raise WSIError(
        f"{pyramid.path.name}: its smallest pyramid level is still {w}x{h} px ({len(pyramid.levels)} levels, "
        f"{h * w * 3 / 2**30:.1f} GiB as RGB), and napari loads a slide's smallest level whole. If the file is "
        "truncated, copy it again; else " + convert[0].lower() + convert[1:]
    )


def read_slide(path: str | list[str]) -> list[LayerData]:
    """Open a slide as one multiscale RGB image layer (plus associated images if requested).

    Raises:
        WSIError: unreadable, corrupt or truncated file, or a huge single-level image.
    """
    from napari_pathdistill.wsi import open_pyramid

    slide = Path(path[0] if isinstance(path, list) else path)
    pyramid = open_pyramid(slide)
    try:
        _maybe_srgb(pyramid)
        _check_displayable(pyramid)
    except WSIError:
        pyramid.close()
        raise
    if pyramid.mpp is None:
        bad = pyramid.implausible_mpp
        what = "has no pixel size (MPP)" if bad is None else _implausible(bad)
        warnings.warn(
            f"{slide.name} {what}: opened in pixels; the scale bar and um/px-based tiling "
            "use level-0 pixels. If you know it, set 'slide um/px override' in the embed, tissue or similarity "
            "widget (or --mpp-override on the command line).",
            UserWarning,
            stacklevel=2,
        )
    if pyramid.channels is not None:  # multiplex immunofluorescence: one layer per channel
        return channel_layers(pyramid, slide_layer_kwargs(pyramid))
    levels = pyramid.to_dask()
    kwargs = slide_layer_kwargs(pyramid)
    layers: list[LayerData] = [(levels, kwargs, "image")]
    wanted = os.environ.get("PATHDISTILL_ASSOCIATED", "").strip()
    if wanted:
        layers += associated_layers(pyramid, _wanted_associated(pyramid, wanted))
    return layers


def _implausible(mpp: tuple[float, float]) -> str:
    """How the no-MPP warning words a stated (y, x) um/px that is no microscope's."""
    y, x = mpp
    size = f"{x:.4g} um/px" if f"{x:.4g}" == f"{y:.4g}" else f"{x:.4g} x {y:.4g} um/px (x, y)"
    if all(math.isfinite(v) and v > 0 for v in mpp):
        return f"states {size}, no microscope's (a dpi placeholder)"
    return f"states {size}, which is no pixel size (zero, negative or not a number)"


def _wanted_associated(pyramid: Any, wanted: str) -> list[str]:
    """The associated images named by ``PATHDISTILL_ASSOCIATED`` (``view --associated``): 'all' or a comma list;
    a name the slide has not is said in a warning that lists those it has."""
    have = pyramid.associated_image_names()
    if wanted == "all":
        return have
    names = [n.strip() for n in wanted.split(",") if n.strip()]
    if missing := [n for n in names if n not in have]:
        warnings.warn(
            f"{pyramid.path.name} has no associated image {', '.join(map(repr, missing))}; it has: "
            f"{', '.join(have) or 'none'}.",
            UserWarning,
            stacklevel=3,
        )
    return [n for n in names if n in have]


#: the slide and each associated image take this many times their width: a 5 % gap before the next image
ASSOCIATED_SPACING = 1.05


def associated_layers(pyramid: Any, names: list[str] | None = None, x_min: float = 0.0) -> list[LayerData]:
    """Associated images (label, macro, thumbnail, ...) as separate RGB layers, placed side by side right of the
    slide, at the slide's height, from world x ``x_min`` (or the slide's right edge and a 5 % gap) on."""
    names = pyramid.associated_image_names() if names is None else names
    out: list[LayerData] = []
    h0, w0 = pyramid.levels[0].shape
    unit_y, unit_x = pyramid.mpp if pyramid.mpp else (1.0, 1.0)  # non-square pixels: y and x differ
    x_off = max(w0 * unit_x * ASSOCIATED_SPACING, x_min)
    for name in [n for n in names if n in pyramid.associated_image_names()]:
        img = pyramid.read_associated(name)
        scale = (h0 * unit_y / img.shape[0],) * 2  # same height as the slide, aspect kept
        kw = {"name": f"{pyramid.path.name} [{name}]", "rgb": True, "scale": scale, "translate": (0, x_off)}
        if pyramid.mpp:
            kw["units"] = ("um", "um")
        out.append((img, kw, "image"))
        x_off += img.shape[1] * scale[1] * ASSOCIATED_SPACING
    return out
