"""Associated images (label, macro, thumbnail) of an OME-TIFF: its further Image series, named so.

Bio-Formats (``bfconvert``, ``bioformats2raw`` + ``raw2ometiff``) and QuPath convert an SVS, NDPI or MRXS to an
OME-TIFF with the slide as the first Image and its label and macro as further Images named ``label image``,
``macro image`` (``overview``, ``thumbnail``...): tifffile reads them as series with those names. The names are
those QuPath takes for associated images (``BioFormatsImageServer.extraImageNames``), mapped onto OpenSlide's:
``label``, ``macro`` (an overview is the macro, as for DICOM's OVERVIEW) and ``thumbnail``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from napari_pathdistill.errors import WSIError
from napari_pathdistill.wsi._backend_utils import to_rgb
from napari_pathdistill.wsi._tiff_samples import sample_layout

#: OME Image names (lower case) of associated images -> the name used here (OpenSlide's)
ASSOCIATED_NAMES = {
    "label": "label",
    "label image": "label",
    "macro": "macro",
    "macro image": "macro",
    "overview": "macro",
    "overview image": "macro",
    "thumbnail": "thumbnail",
    "thumbnail image": "thumbnail",
}
#: an associated image with more pixels than this is not one (a second scan, not a label)
MAX_ASSOCIATED_PIXELS = 8192 * 8192


def associated_series(tif: Any) -> dict[str, Any]:
    """name -> tifffile series of the associated images of an OME-TIFF (the first of each name); {} otherwise."""
    if not tif.is_ome:
        return {}
    out: dict[str, Any] = {}
    for series in tif.series[1:]:
        name = ASSOCIATED_NAMES.get((series.name or "").strip().lower())
        if name is not None and name not in out:
            out[name] = series
    return out


def read_series_rgb(path: Path | str, name: str, series: Any) -> np.ndarray:
    """The first page of ``series`` (an associated image) as (h, w, 3) uint8 RGB.

    Raises:
        WSIError: it is larger than MAX_ASSOCIATED_PIXELS, of a layout shown nowhere as RGB, or cannot be decoded.
    """
    page = series.keyframe
    if page.imagelength * page.imagewidth > MAX_ASSOCIATED_PIXELS:
        raise WSIError(
            f"{Path(path).name}: its {name!r} image is {page.imagewidth}x{page.imagelength} px, too large for an "
            "associated image; it is not shown."
        )
    layout = sample_layout(path, page)
    try:
        arr = np.asarray(page.asarray())
    except Exception as exc:
        raise WSIError(
            f"{Path(path).name}: its {name!r} image cannot be decoded ({exc}); corrupt file."
        ) from exc
    if arr.ndim == 3 and page.planarconfig == 2 and arr.shape[0] == page.samplesperpixel:
        arr = np.moveaxis(arr, 0, -1)
    background = (255, 255, 255)
    return to_rgb(layout.apply(arr, background), background)
