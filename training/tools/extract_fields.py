"""Cut slides into tissue fields at a target um/px, saved as JPEGs (a tile folder for machines without OpenSlide).

Used to ship the real slides of ../shared/data to a GPU machine that cannot read WSIs; the trainer then
samples random crops of these fields (``data.tile_dirs``). Slides are read with OpenSlide (or tifffile for
OME-TIFF) as one level-0 image, so this is for small slides; large WSIs are sampled on the fly by
``data.slides`` instead.

Usage: python training/tools/extract_fields.py OUT_DIR --field 512 --mpp 0.5 SLIDE[:MPP] ...
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image


def read_level0(path: Path) -> tuple[np.ndarray, float | None]:
    """(H, W, 3) uint8 level-0 image and its um/px (None if unknown)."""
    if path.name.endswith((".ome.tif", ".ome.tiff")):
        import tifffile

        with tifffile.TiffFile(path) as tf:
            img = tf.series[0].levels[0].asarray()
            px = tf.ome_metadata and __import__("re").search(r'PhysicalSizeX="([0-9.eE-]+)"', tf.ome_metadata)
        return img[..., :3], float(px.group(1)) if px else None
    if path.suffix.lower() in (".png", ".jpg", ".jpeg"):
        return np.asarray(Image.open(path).convert("RGB")), None
    import openslide

    with openslide.OpenSlide(str(path)) as s:
        img = np.asarray(s.read_region((0, 0), 0, s.dimensions).convert("RGB"))
        mpp = s.properties.get(openslide.PROPERTY_NAME_MPP_X)
    return img, float(mpp) if mpp else None


def tissue_fraction(rgb: np.ndarray) -> float:
    """Fraction of pixels that are neither near-white background nor near-black."""
    sat = rgb.max(-1).astype(int) - rgb.min(-1).astype(int)
    return float(((sat > 20) & (rgb.mean(-1) > 30)).mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("out", type=Path)
    ap.add_argument("slides", nargs="+", help="PATH or PATH:MPP (MPP overrides/assumes the slide's um/px)")
    ap.add_argument("--field", type=int, default=512)
    ap.add_argument("--mpp", type=float, default=0.5)
    ap.add_argument("--min-tissue", type=float, default=0.3)
    a = ap.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    for spec in a.slides:
        path, _, forced = spec.partition(":")
        img, mpp = read_level0(Path(path))
        mpp = float(forced) if forced else (mpp or a.mpp)
        h, w = img.shape[:2]
        scale = mpp / a.mpp
        img = np.asarray(Image.fromarray(img).resize((round(w * scale), round(h * scale)), Image.LANCZOS))
        n = 0
        for y in range(0, img.shape[0] - a.field + 1, a.field):
            for x in range(0, img.shape[1] - a.field + 1, a.field):
                f = img[y : y + a.field, x : x + a.field]
                if tissue_fraction(f) >= a.min_tissue:
                    Image.fromarray(f).save(a.out / f"{Path(path).stem}_{y}_{x}.jpg", quality=92)
                    n += 1
        print(f"{path}: {img.shape[1]}x{img.shape[0]} px at {a.mpp} um/px (from {mpp}), {n} fields")


if __name__ == "__main__":
    main()
