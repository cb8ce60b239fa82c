"""The tile images of a folder: recursive, through symlinked folders, without ``pathdistill tiles``' by-products.

``pathdistill tiles SLIDE --out DIR --save-tiles N`` writes ``DIR/tiles/tile_*.png`` beside its manifest
(``grid.json``, ``tiles.csv``) and two images that are not tiles (``preview.png``, ``tissue_mask.png``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
#: what ``pathdistill tiles --out DIR`` writes beside its ``tiles/`` folder: images, but not tiles
TILES_CMD_BYPRODUCTS = ("preview.png", "tissue_mask.png")
TILES_CMD_MANIFEST = ("grid.json", "tiles.csv")


def list_tiles(root: Path) -> tuple[list[Path], list[Path]]:
    """The tile images under ``root`` in path order, and the ``pathdistill tiles`` by-products left out."""
    images = _images_under(root)
    left_out = [p for p in images if _tiles_cmd_byproduct(p)]
    drop = set(left_out)
    return ([p for p in images if p not in drop] if drop else images), left_out


def _images_under(root: Path) -> list[Path]:
    """The image files under ``root`` in path order, following symlinked folders (each real folder once).

    ``Path.rglob`` does not descend into a symlinked folder (before Python 3.13), so a folder of links to the
    tile folders of several slides held no tiles.
    """
    seen: set[str] = set()
    # (sort key, folder, name): sorting 100k Path objects takes seconds, lists of strings a fraction of that
    found: list[tuple[list[str], Path, str]] = []
    for folder, subfolders, files in os.walk(root, followlinks=True):
        real = os.path.realpath(folder)
        if real in seen:  # a link back up the tree, or a second link to the same folder
            subfolders.clear()
            continue
        seen.add(real)
        parent, parts = Path(folder), os.path.relpath(folder, root).split(os.sep)
        parts = [] if parts == ["."] else parts
        found += [([*parts, f], parent, f) for f in files if os.path.splitext(f)[1].lower() in IMAGE_SUFFIXES]
    found.sort(key=lambda item: item[0])  # Path order (by parts)
    return [parent / name for _, parent, name in found]


def _tiles_cmd_byproduct(path: Path) -> bool:
    """Whether ``path`` is the preview or tissue mask of a ``pathdistill tiles`` output (beside its manifest)."""
    return path.name in TILES_CMD_BYPRODUCTS and all((path.parent / m).is_file() for m in TILES_CMD_MANIFEST)


def manifest_mpp(folder: Path) -> float | None:
    """The um/px at which ``pathdistill tiles`` wrote the tiles of ``folder`` (``DIR/tiles``; ``mpp`` of
    ``DIR/grid.json``), or None: not such a folder, or level-0 px of a slide without MPP (``mpp`` null)."""
    if folder.name != "tiles" or not all((folder.parent / m).is_file() for m in TILES_CMD_MANIFEST):
        return None
    try:
        mpp = json.loads((folder.parent / "grid.json").read_text()).get("mpp")
    except (OSError, ValueError, AttributeError):  # unreadable, not JSON, not an object
        return None
    return float(mpp) if isinstance(mpp, int | float) and mpp > 0 else None
