"""Offline robustness benchmark: a small, reproducible STAND-IN for PLISM built from ../shared/data.

It is not PLISM (46 tissues x 13 stainings x 7 scanners, 16,278 registered tiles per slide); it exercises the
same protocol on data available offline:

* tissue ``cmu-he``: the real H&E slide CMU-1-Small-Region, re-stained at slide level (HED optical-density
  re-mixing at two strengths, Macenko toward the torchstain target, Reinhard toward the tiatoolbox target) and
  "re-scanned" per tile (JPEG q40, Gaussian blur, colour gain + gamma): 5 stains x 4 scanners = 20 slides;
* tissue ``os2-ki67``: the REAL cross-scanner pair OS-2 (Hamamatsu NDPI vs Olympus VSI) rescaled to a common
  um/px and registered (``wsi.registration``), each with 3 HED stain variants: 3 stains x 2 scanners.

Matched tiles share the same grid position, so the correspondence is known. Pairs are formed within a tissue
and grouped as in plismbench (cross-scanner / cross-staining / both). With a real PLISM download, use
``features_io.discover_plism`` instead (see docs/evaluation.md).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from skimage.transform import rescale

from napari_pathdistill.atomic import atomic_path
from napari_pathdistill.errors import EvaluationError
from napari_pathdistill.evaluation import perturbations as P
from napari_pathdistill.evaluation.manifest import SlideEntry, write_manifest
from napari_pathdistill.progress import Progress
from napari_pathdistill.wsi.registration import register_images, warp_moving

Transform = Callable[[np.ndarray], np.ndarray]

#: version of the slides' conditions (their perturbations), stored with each features file: files embedded from
#: other versions are embedded again. 2: the HED stain versions jitter the unclamped concentrations
#: (``perturbations.rgb_to_stains``); version 1 files carried skimage's clamp artefact (up to 210/255 on red blood
#: cells with no jitter at all).
CONDITIONS_VERSION = 2


@dataclass(frozen=True)
class TissueSource:
    """Matched tiles of one tissue under its real scanners: ``{scanner: (N, px, px, 3) uint8}`` + coords."""

    name: str
    stain: str
    tiles: dict[str, np.ndarray]
    coords: np.ndarray  # (N, 2) (x, y) in um from the fixed image's origin


def _read_rgb(path: Path) -> tuple[np.ndarray, float]:
    """Whole level 0 of a small slide and its um/px (x), through ``wsi.open_pyramid``."""
    from napari_pathdistill.wsi import open_pyramid

    with open_pyramid(path) as pyr:
        if pyr.mpp is None:
            raise EvaluationError(f"{path} has no MPP; the offline benchmark needs physical pixel sizes")
        h, w = pyr.levels[0].shape
        return pyr.read_region((0, 0), 0, (w, h)), float(pyr.mpp[1])


def _at_mpp(rgb: np.ndarray, mpp: float, target: float) -> np.ndarray:
    out = rescale(
        rgb, mpp / target, order=1, channel_axis=-1, anti_aliasing=mpp < target, preserve_range=True
    )
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def grid_tiles(
    images: list[np.ndarray], tile_px: int, stride: int, max_tiles: int, min_tissue: float = 0.5
) -> tuple[list[np.ndarray], np.ndarray]:
    """Tiles at the same grid positions of co-registered images, kept where every image has tissue."""
    h = min(im.shape[0] for im in images)
    w = min(im.shape[1] for im in images)
    ys, xs = np.mgrid[0 : h - tile_px + 1 : stride, 0 : w - tile_px + 1 : stride]
    pos = np.c_[xs.ravel(), ys.ravel()]
    masks = [P.tissue_density_mask(im) for im in images]
    frac = np.min([[m[y : y + tile_px, x : x + tile_px].mean() for x, y in pos] for m in masks], axis=0)
    pos = pos[frac >= min_tissue]
    if len(pos) > max_tiles:
        pos = pos[np.linspace(0, len(pos) - 1, max_tiles).round().astype(int)]
    tiles = [np.stack([im[y : y + tile_px, x : x + tile_px] for x, y in pos]) for im in images]
    return tiles, pos


def cmu_source(data: Path, tile_px: int, mpp: float, max_tiles: int) -> TissueSource:
    """Tiles of the real H&E slide CMU-1-Small-Region at ``mpp`` (single scanner: Aperio)."""
    rgb, slide_mpp = _read_rgb(data / "wsi" / "CMU-1-Small-Region.svs")
    img = _at_mpp(rgb, slide_mpp, mpp)
    (tiles,), pos = grid_tiles([img], tile_px, tile_px, max_tiles)
    return TissueSource("cmu-he", "he", {"aperio": tiles}, pos * mpp)


def os2_source(data: Path, tile_px: int, mpp: float, max_tiles: int, work_mpp: float = 4.0) -> TissueSource:
    """Matched tiles of the real OS-2 NDPI vs VSI pair after rescaling to ``mpp`` and registration."""
    d = data / "paired" / "openslide_OS-2_ndpi_vs_vsi"
    (ndpi, m1), (vsi, m2) = _read_rgb(d / "OS-2-ndpi.ome.tif"), _read_rgb(d / "OS-2-vsi.ome.tif")
    reg = register_images(ndpi, vsi, fixed_mpp=m1, moving_mpp=m2, work_mpp=work_mpp, angles=(0,))
    fixed = _at_mpp(ndpi, m1, mpp)
    moving = _at_mpp(vsi, m2, mpp)
    s = np.diag([1 / mpp, 1 / mpp, 1.0])
    warped = warp_moving(moving, s @ reg.matrix @ np.linalg.inv(s), fixed.shape[:2])
    warped = np.clip(np.rint(np.nan_to_num(warped, nan=255.0)), 0, 255).astype(np.uint8)
    # non-overlapping tiles, as in PLISM: overlapping neighbours would be near-duplicate distractors
    (t1, t2), pos = grid_tiles([fixed, warped], tile_px, tile_px, max_tiles)
    return TissueSource("os2-ki67", "ki67", {"hamamatsu": t1, "olympus": t2}, pos * mpp)


def stain_transforms(data: Path, he: bool) -> dict[str, Transform]:
    """Slide-level stain conditions (applied to every tile with the same parameters)."""
    out: dict[str, Transform] = {
        "original": lambda x: x,
        "hed-light": lambda x: P.hed_jitter(x, seed=11, sigma=0.05, bias=0.01),
        "hed-strong": lambda x: P.hed_jitter(x, seed=23, sigma=0.2, bias=0.04),
    }
    if he:
        tgt_m = np.asarray(Image.open(data / "stain_norm" / "torchstain" / "target.png").convert("RGB"))
        tgt_r = np.asarray(Image.open(data / "stain_norm" / "tiatoolbox" / "target_image.png").convert("RGB"))
        stains = P.macenko_fit(tgt_m)
        out["macenko"] = lambda x: P.macenko_normalize(x, stains)
        out["reinhard"] = lambda x: P.reinhard_normalize(x, tgt_r)
    return out


SCANNERS: dict[str, Transform] = {
    "jpeg-q40": lambda x: P.jpeg(x, 40),
    "blur-1.5": lambda x: P.blur(x, 1.5),
    "warm-gamma": lambda x: P.colour_gamma(x, gain=(1.06, 0.97, 0.9), gamma=0.85, offset=(4, 0, -3)),
}


def iter_conditions(source: TissueSource, data: Path) -> Iterator[tuple[SlideEntry, np.ndarray]]:
    """Every (stain, scanner) virtual slide of a tissue: its manifest entry and (N, px, px, 3) tiles."""
    stains = stain_transforms(data, he=source.stain == "he")
    scanners = dict(source.tiles)
    synthetic = SCANNERS if len(scanners) == 1 else {}
    for stain_name, stain in stains.items():
        for scanner_name, tiles in scanners.items():
            stained = np.stack([stain(t) for t in tiles])
            yield (
                SlideEntry(
                    f"{source.name}__{stain_name}__{scanner_name}",
                    stain_name,
                    scanner_name,
                    None,
                    source.name,
                ),
                stained,
            )
            for syn_name, syn in synthetic.items():
                yield (
                    SlideEntry(
                        f"{source.name}__{stain_name}__{syn_name}", stain_name, syn_name, None, source.name
                    ),
                    np.stack([syn(t) for t in stained]),
                )


def iter_build_benchmark(
    out_dir: str | Path,
    embed: Callable[[np.ndarray], np.ndarray],
    data: str | Path,
    *,
    tile_px: int = 224,
    mpp: float = 0.5,
    max_tiles: int = 64,
    tissues=("cmu-he", "os2-ki67"),
    stamp: Mapping[str, str | int | float] | None = None,
) -> Iterator[Progress | Path]:
    """Build the stand-in benchmark: per-slide HDF5 features for ``embed`` and a manifest.

    Args:
        out_dir: output folder (``features/<slide>.h5`` and ``manifest.csv``); an existing features file is
            reused only when it was written for the same ``stamp``, ``tile_px``, ``mpp``, tiles and
            :data:`CONDITIONS_VERSION` (its HDF5 attributes and coords), else embedded again: a rerun with another model or ``max_tiles`` into the
            same folder scored the first run's features under the new model's name.
        embed: ``(B, px, px, 3) uint8 -> (B, D)`` features, e.g. ``EmbeddingModel.embed``.
        data: the shared data root (``../shared/data``).
        tile_px: tile size in pixels at ``mpp``.
        mpp: tile resolution (um/px).
        max_tiles: matched tiles per tissue (evenly spread over the tissue grid).
        tissues: which tissue sources to include.
        stamp: what identifies ``embed`` (e.g. ``{"model": name, "weights": weights id}``), written into each
            features file's attributes.

    Yields:
        ``Progress`` items, then the manifest path.
    """
    import h5py

    out, data = Path(out_dir), Path(data)
    (out / "features").mkdir(parents=True, exist_ok=True)
    builders = {"cmu-he": cmu_source, "os2-ki67": os2_source}
    attrs = {**(stamp or {}), "tile_px": tile_px, "mpp": mpp, "conditions": CONDITIONS_VERSION}
    entries: list[SlideEntry] = []
    for t_i, name in enumerate(tissues):
        yield Progress(t_i, len(tissues), f"reading {name}")
        source = builders[name](data, tile_px, mpp, max_tiles)
        for entry, tiles in iter_conditions(source, data):
            path = out / "features" / f"{entry.slide}.h5"
            done = "reused" if reusable(path, attrs, source.coords) else "embedded"
            if done == "embedded":
                feats = np.concatenate([embed(tiles[i : i + 16]) for i in range(0, len(tiles), 16)])
                with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
                    f["features"], f["coords"] = feats.astype(np.float32), source.coords
                    f.attrs.update(attrs)
            entries.append(SlideEntry(entry.slide, entry.stain, entry.scanner, path, entry.tissue))
            yield Progress(len(entries), 0, f"{done} {entry.slide}")
    yield write_manifest(entries, out / "manifest.csv")


def reusable(path: Path, attrs: Mapping[str, str | int | float], coords: np.ndarray) -> bool:
    """Whether the features file ``path`` was written for ``attrs`` (model stamp, tile px, um/px) and holds the
    tiles at ``coords``; False when it is missing, unreadable, of another model or of other tiles."""
    import h5py

    if not path.is_file():
        return False
    try:
        with h5py.File(path, "r") as f:
            same = all(k in f.attrs and f.attrs[k] == v for k, v in attrs.items())
            return bool(same and "coords" in f and np.array_equal(f["coords"][()], coords))
    except OSError:
        return False
