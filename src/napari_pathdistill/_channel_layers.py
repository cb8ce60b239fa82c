"""The napari layers of a multiplex immunofluorescence slide: one greyscale layer per channel (``_reader``).

Colours from the file (else :data:`CHANNEL_COLORMAPS`), additive blending, placed in um like the RGB slide layer;
contrast limits from the coarsest level, or a bounded sample of its tiles when it is large.
"""

from __future__ import annotations

import math
from typing import Any

LayerData = tuple[Any, dict[str, Any], str]

#: napari colormaps of the channels whose file states no colour, in channel order
CHANNEL_COLORMAPS = ("blue", "green", "red", "magenta", "cyan", "yellow", "gray")
#: contrast limits come from percentiles of the coarsest level when it has at most this many pixels
_LIMITS_MAX_PIXELS = 2048 * 2048


def channel_layers(pyramid: Any, base: dict[str, Any]) -> list[LayerData]:
    """A multiplex slide as one multiscale greyscale image layer per channel, blended additively.

    Each layer is named after its channel, coloured from the file (else :data:`CHANNEL_COLORMAPS`), placed
    in um with ``base`` (the slide's ``_reader.slide_layer_kwargs``); its data are the channel's lazy levels (h, w)
    of native dtype.
    """
    import copy

    levels = pyramid.channel_dask()
    layers: list[LayerData] = []
    for c, ch in enumerate(pyramid.channels):
        kw = {**base, "name": ch.name, "rgb": False, "blending": "additive"}
        kw["colormap"] = _channel_colormap(c, ch.color)
        kw["contrast_limits"] = _contrast_limits(levels[-1][c], ch.dtype)
        kw["metadata"] = copy.deepcopy(base.get("metadata", {}))
        kw["metadata"].setdefault("pathdistill", {}).update(channel=c, channel_name=ch.name)
        layers.append(([lv[c] for lv in levels], kw, "image"))
    return layers


def _channel_colormap(c: int, color: tuple[int, int, int] | None) -> Any:
    """A black-to-``color`` colormap (napari's dict form) or, without a colour, one of CHANNEL_COLORMAPS."""
    if color is None:
        return CHANNEL_COLORMAPS[c % len(CHANNEL_COLORMAPS)]
    rgb = [v / 255.0 for v in color]
    hexcode = "".join(f"{v:02x}" for v in color)
    return {"colors": [[0.0, 0.0, 0.0, 1.0], [*rgb, 1.0]], "name": f"pathdistill-#{hexcode}"}


def _limits_sample(coarsest: Any) -> Any:
    """The coarsest level's pixels if it has at most _LIMITS_MAX_PIXELS, else those of up to 4 x 4 of its native
    tiles (dask blocks) spread evenly over it, as many as hold _LIMITS_MAX_PIXELS together (a single-level slide
    is all level 0: never read whole); None when one tile alone holds more."""
    import numpy as np

    if coarsest.size <= _LIMITS_MAX_PIXELS:
        return np.asarray(coarsest)
    side = math.isqrt(_LIMITS_MAX_PIXELS // math.prod(coarsest.chunksize))  # tiles per axis within the budget
    if side == 0:
        return None
    picks = [
        np.unique(np.linspace(0, n - 1, min(n, side, 4)).round().astype(int)) for n in coarsest.numblocks
    ]
    return np.concatenate([np.asarray(coarsest.blocks[y, x]).ravel() for y in picks[0] for x in picks[1]])


def _contrast_limits(coarsest: Any, dtype: Any) -> tuple[float, float]:
    """(0.5, 99.9) percentiles of the coarsest level (a sample of its tiles if large), else the dtype's range."""
    import numpy as np

    sample = _limits_sample(coarsest)
    if sample is not None and sample.size:
        lo, hi = (float(v) for v in np.percentile(sample, [0.5, 99.9]))
        if hi > lo:
            return (lo, hi)
    if np.dtype(dtype).kind in "ui":
        info = np.iinfo(dtype)
        return (float(info.min), float(info.max))
    return (0.0, 1.0)
