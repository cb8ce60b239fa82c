"""``pathdistill tiles SLIDE --out DIR``: tissue mask + tile grid of a slide as CSV, PNG preview and JSON.

Outputs in DIR: ``tiles.csv`` (index, x, y in level-0 px, size_level0, level, tissue_fraction), ``tissue_mask.png``,
``preview.png`` (thumbnail, tissue tinted green, kept tiles outlined in yellow) and ``grid.json`` (parameters).
``--threshold`` is the Tissue widget's "tissue threshold", so a grid tuned there is reproduced here.
With ``--save-tiles N`` the first N tiles are also written as PNGs (tile_px at the target um/px).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from napari_pathdistill.atomic import atomic_path, atomic_write_text, folder_problem
from napari_pathdistill.cli._argtypes import (
    fraction,
    non_negative_float,
    non_negative_int,
    positive_float,
    positive_int,
)
from napari_pathdistill.cli._bars import advance, progress_bar
from napari_pathdistill.cli._preview import preview
from napari_pathdistill.errors import PathDistillError

if TYPE_CHECKING:
    from napari_pathdistill.wsi.pyramid import Pyramid
    from napari_pathdistill.wsi.tiling import TileGrid

#: tiles read into memory at a time by ``--save-tiles`` (256 tiles of 512 px: 200 MB)
SAVE_CHUNK = 256


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``tiles``."""
    p = subparsers.add_parser("tiles", help="tissue mask + tile grid of a slide -> CSV / PNG preview")
    p.add_argument("slide", type=Path, help="slide file or DICOM folder")
    p.add_argument("--out", type=Path, required=True, help="output folder (created)")
    p.add_argument("--tile-px", type=positive_int, default=224, help="tile side in pixels (default 224)")
    p.add_argument("--mpp", type=positive_float, default=0.5, help="target um/px of the tiles (default 0.5)")
    p.add_argument(
        "--min-tissue",
        type=fraction,
        default=0.5,
        help="minimum tissue fraction (0-1) to keep a tile (default 0.5; 0 keeps every tile)",
    )
    p.add_argument("--threshold", type=non_negative_float, default=None, metavar="OD",
                   help="optical density (sum over RGB, relative to the glass) above which a pixel is "
                   "tissue: the Tissue widget's 'tissue threshold' (default 0.08; lower it, e.g. 0.05, "
                   "for faint H&E)")  # fmt: skip
    p.add_argument("--mpp-override", type=float, default=None, metavar="UM_PER_PX",
                   help="level-0 um/px of the slide if its file states none (a file's own MPP wins)")  # fmt: skip
    p.add_argument("--max-size", type=positive_int, default=2048,
                   help="longer side of the tissue-detection thumbnail in px (default 2048)")  # fmt: skip
    p.add_argument(
        "--save-tiles",
        type=non_negative_int,
        default=0,
        metavar="N",
        help="also write the first N tiles as PNG",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Compute mask and grid, write the outputs; returns the exit code."""
    from skimage.io import imsave

    from napari_pathdistill.wsi import detect_tissue, make_tile_grid, open_pyramid
    from napari_pathdistill.wsi.tiling import square_pixel_mpp
    from napari_pathdistill.wsi.tissue import TISSUE_THRESHOLD

    threshold = TISSUE_THRESHOLD if args.threshold is None else args.threshold
    problem = folder_problem(args.out)  # before the slide is read
    if problem is not None:
        print(f"error: argument --out: {problem}", file=sys.stderr)
        return 2
    try:
        with open_pyramid(args.slide, fallback_mpp=args.mpp_override) as pyr:
            pyr.require_brightfield("tiling")
            square_pixel_mpp(pyr)  # refused before the thumbnail is read
            with progress_bar(desc="thumbnail", unit="block") as bar:  # read once: mask and preview
                thumb, ds = pyr.thumbnail(args.max_size, progress=lambda d, n: advance(bar, d, n))
            mask = detect_tissue(pyr, thumbnail=(thumb, ds), threshold=threshold)
            grid = make_tile_grid(
                pyr, tile_px=args.tile_px, mpp=args.mpp, min_tissue=args.min_tissue, mask=mask
            )
            slide_mpp = pyr.mpp
            # everything but the tiles is computed before the first write; each file appears whole or not at
            # all (Ctrl-C, kill), and grid.json, removed before and written last, says the folder is complete
            images = {"tissue_mask.png": (mask.mask * 255).astype(np.uint8),
                      "preview.png": preview(thumb, mask.mask, grid.coords, grid.size_level0, ds)}  # fmt: skip
            out: Path = args.out
            out.mkdir(parents=True, exist_ok=True)
            (out / "grid.json").unlink(missing_ok=True)
            save_tiles(pyr, grid, out / "tiles", min(args.save_tiles, len(grid)))
    except (PathDistillError, ValueError) as exc:  # ValueError: a bad tile px / min tissue / um/px value
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # the disk filled up, the folder went away
        print(f"error: cannot write the tiles into {args.out}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    meta = {
        "slide": str(args.slide.expanduser().resolve()), "slide_mpp": slide_mpp, "tile_px": grid.tile_px,
        "mpp": grid.mpp, "size_level0": grid.size_level0, "level": grid.level, "min_tissue": args.min_tissue,
        "threshold": threshold, "n_tiles": len(grid), "grid_shape": grid.grid_shape,
        "mask_downsample": mask.downsample,
    }  # fmt: skip
    try:
        atomic_write_text(out / "tiles.csv", _csv_text(grid))
        for name, img in images.items():
            with atomic_path(out / name) as tmp:
                imsave(tmp, img, check_contrast=False)
        atomic_write_text(out / "grid.json", json.dumps(meta, indent=2))
    except OSError as exc:  # each file is whole or absent; without grid.json the folder is not complete
        print(f"error: cannot write into {out}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    _print_summary(grid, args.mpp, out)
    if not len(grid):
        print(_no_tiles_note(args, float(mask.mask.mean()), threshold), file=sys.stderr)
    return 0


def save_tiles(pyr: Pyramid, grid: TileGrid, folder: Path, n: int) -> None:
    """Write the first ``n`` tiles of ``grid`` as ``folder/tile_NNNNN.png`` (each whole or not at all), with a
    progress bar, ``SAVE_CHUNK`` tiles in memory at a time (all at once, 100k tiles of 224 px took 15 GB).

    The ``tile_NNNNN.png`` an earlier run left in ``folder`` are deleted first (a note says how many): they
    were cut from another grid (other um/px, px or tissue threshold) than the new ``grid.json`` describes.
    """
    from skimage.io import imsave

    from napari_pathdistill.wsi import read_tiles

    old = [f for f in folder.glob("tile_*.png") if f.stem[5:].isdigit()] if folder.is_dir() else []
    for f in old:
        f.unlink()
    if old:
        print(f"note: deleted the {len(old)} tiles an earlier run wrote to {folder}")
        if not n and not any(folder.iterdir()):
            folder.rmdir()
    if not n:
        return
    folder.mkdir(exist_ok=True)
    with progress_bar(desc="tiles", unit="tile", total=n) as bar:
        for start in range(0, n, SAVE_CHUNK):
            for i, tile in enumerate(read_tiles(pyr, grid, range(start, min(start + SAVE_CHUNK, n))), start):
                with atomic_path(folder / f"tile_{i:05d}.png") as tmp:
                    imsave(tmp, tile, check_contrast=False)
                bar.update(1)


def _csv_text(grid: TileGrid) -> str:
    """tiles.csv: index, x, y (level-0 px), size_level0, level, tissue_fraction; one row per tile."""
    fh = io.StringIO()
    w = csv.writer(fh)
    w.writerow(["index", "x", "y", "size_level0", "level", "tissue_fraction"])
    size, level = f"{grid.size_level0:.4f}", grid.level
    w.writerows(
        [i, x, y, size, level, f"{f:.4f}"]
        for i, ((x, y), f) in enumerate(zip(grid.coords.tolist(), grid.tissue_fraction.tolist(), strict=True))
    )
    return fh.getvalue()


def _no_tiles_note(args: argparse.Namespace, tissue: float, threshold: float) -> str:
    """Why the grid is empty and what to change: no tissue at all, or tissue but no tile with enough of it."""
    if tissue == 0:
        return (
            f"note: no tissue found on {Path(args.slide).name} at --threshold {threshold:g} (optical density "
            "above the glass): tiles.csv has no rows. A blank slide has none; for faint stain lower the "
            "threshold (e.g. --threshold 0.05) and check preview.png"
        )
    return (
        f"note: the tissue mask covers {100 * tissue:.1f} % of {Path(args.slide).name} but no tile of "
        f"{args.tile_px} px at {args.mpp:g} um/px reaches --min-tissue {args.min_tissue:g}: tiles.csv has no rows; "
        "lower --min-tissue or cut smaller tiles (see preview.png)"
    )


def _print_summary(grid: TileGrid, asked_mpp: float, out: Path) -> None:
    """One line of what was written; a note when the slide's missing MPP kept ``--mpp`` from applying."""
    res_txt = f"{grid.mpp:g} um/px" if grid.mpp else "level-0 px"
    print(f"{len(grid)} tiles of {grid.tile_px} px at {res_txt} (level {grid.level}) -> {out}")
    if not grid.mpp:
        print(
            f"note: the slide states no MPP, so --mpp {asked_mpp:g} could not apply: the tiles are "
            f"{grid.tile_px} level-0 px; pass --mpp-override UM_PER_PX to tile at {asked_mpp:g} um/px"
        )
