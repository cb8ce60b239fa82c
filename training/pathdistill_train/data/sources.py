"""Tile sources: random fields sampled on the fly from WSIs (tissue grid) or from a folder of tile images.

A source returns, for an index and an RNG, a (3, S, S) uint8 field of ``S = source_px`` pixels at the
target um/px. WSIs are tiled with ``napari_pathdistill.wsi`` (open_pyramid / detect_tissue /
make_tile_grid / read_tiles) at ``source_px`` and the target ``mpp``.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from PIL import Image

from napari_pathdistill.errors import CorruptTileWarning
from napari_pathdistill.wsi.pil_rgb import pil_rgb
from pathdistill_train.data.tile_listing import IMAGE_SUFFIXES, TILES_CMD_BYPRODUCTS, list_tiles, manifest_mpp
from pathdistill_train.errors import TrainDataError

if TYPE_CHECKING:
    from napari_pathdistill.wsi.pyramid import Pyramid
    from napari_pathdistill.wsi.tiling import TileGrid


class TileFolderSource:
    """Every image in a folder (recursively, through symlinked folders), rescaled from ``folder_mpp`` to ``mpp``;
    random crops of ``source_px``. A tile smaller than that (224-px tiles and the 280-px field of 224-px views)
    gives its largest square, at a random place, enlarged to ``source_px`` (bicubic): the views a full-area crop
    makes are then the tile at its own resolution (until 2026-12-07 it was padded with white: 36 % of the field).

    Args:
        root: folder of tile images.
        source_px: side of the returned field in pixels.
        folder_mpp: um/px of the images (None: already at the target); the tiles of a ``pathdistill tiles``
            output are at the um/px of its ``grid.json`` (when it states one), whatever this says.
        mpp: target um/px.
    """

    def __init__(self, root: str | Path, source_px: int, folder_mpp: float | None, mpp: float) -> None:
        self.root = root = Path(root).expanduser()
        if not root.is_dir():
            raise TrainDataError(
                f"data.tile_dirs: tile folder {root} not found" + (" (a file)" * root.exists())
            )
        self.paths, self.left_out = list_tiles(root)
        if not self.paths:
            hint = (
                f": it holds only the {' and '.join(TILES_CMD_BYPRODUCTS)} of `pathdistill tiles`, which writes "
                "tiles only with --save-tiles N"
            ) * bool(self.left_out)
            raise TrainDataError(
                f"data.tile_dirs: no tile images ({', '.join(IMAGE_SUFFIXES)}) under {root}{hint}"
            )
        self.source_px, self.folder_mpp, self.mpp = source_px, folder_mpp, mpp
        #: um/px of the tiles of each ``pathdistill tiles`` output: its grid.json wins over ``folder_mpp``
        self.manifest_mpp = {
            d: m for d in {p.parent for p in self.paths} if (m := manifest_mpp(d)) is not None
        }
        self.unreadable: set[Path] = set()  # tiles skipped in this process (each worker keeps its own)
        self.warned_enlarged = False  # a tile enlarged more than twice was reported (in this process)

    def __len__(self) -> int:
        return len(self.paths)

    def describe(self) -> list[dict[str, Any]]:
        """The folder (its absolute path) and its number of tile images (for the training record), and what was
        left out."""
        entry: dict[str, Any] = {"tile_dir": str(self.root.resolve()), "tiles": len(self.paths)}
        if self.left_out:
            n = len({p.parent for p in self.left_out})
            entry["left_out"] = (
                f"{len(self.left_out)} images, the {' and '.join(TILES_CMD_BYPRODUCTS)} of {n} "
                f"`pathdistill tiles` output folder{'s' * (n > 1)}"
            )
        mpps = sorted({m for m in self.manifest_mpp.values() if m != self.mpp})
        if mpps:
            entry["rescaled"] = (
                f"from {' / '.join(f'{m:g}' for m in mpps)} um/px (the grid.json of `pathdistill tiles`) "
                f"to {self.mpp:g} um/px"
            )
        return [entry]

    def _read(self, index: int) -> tuple[Path, np.ndarray]:
        """The path and RGB image of tile ``index``, or of the next readable one; an unreadable tile warns once.

        Raises:
            TrainDataError: no image of the folder can be read.
        """
        for k in range(len(self.paths)):
            path = self.paths[(index + k) % len(self.paths)]
            if path in self.unreadable:
                continue
            try:
                with Image.open(path) as im:
                    return path, pil_rgb(im)
            except (
                OSError,
                ValueError,
                Image.DecompressionBombError,
            ) as e:  # UnidentifiedImageError: an OSError
                self.unreadable.add(path)
                warnings.warn(
                    f"skipping unreadable tile {path} ({type(e).__name__}: {e}); "
                    f"{len(self.unreadable)} of {len(self.paths)} tiles skipped so far",
                    CorruptTileWarning,
                    stacklevel=2,
                )
        raise TrainDataError(
            f"data.tile_dirs: none of the {len(self.paths)} images under {self.root} can be read"
        )

    def __getitem__(self, item: tuple[int, torch.Generator]) -> torch.Tensor:
        index, gen = item
        path, rgb = self._read(index)
        h, w = rgb.shape[:2]
        tile_mpp = self.manifest_mpp.get(path.parent, self.folder_mpp)
        scale = tile_mpp / self.mpp if tile_mpp else 1.0
        if scale != 1.0:
            h, w = max(1, round(h * scale)), max(1, round(w * scale))
            rgb = np.asarray(Image.fromarray(rgb).resize((w, h), Image.Resampling.BICUBIC))
        s = self.source_px
        side = min(h, w, s)  # a tile smaller than the field: its largest square, enlarged to the field
        y = int(torch.randint(0, h - side + 1, (1,), generator=gen))
        x = int(torch.randint(0, w - side + 1, (1,), generator=gen))
        field = rgb[y : y + side, x : x + side]
        if side < s:
            self._warn_enlarged(path, (h, w), s / side)
            field = np.asarray(Image.fromarray(field).resize((s, s), Image.Resampling.BICUBIC))
        return torch.from_numpy(np.require(field, requirements=["C", "W"])).permute(2, 0, 1)

    def _warn_enlarged(self, path: Path, shape: tuple[int, int], factor: float) -> None:
        """Warn once (per process) when a tile is enlarged more than twice to fill the field: its views are then
        at a finer um/px than ``mpp`` (a 224-px tile in the 280-px field of 224-px views is enlarged 1.25x)."""
        if factor <= 2 or self.warned_enlarged:
            return
        self.warned_enlarged = True
        warnings.warn(
            f"tile {path} is {shape[1]} x {shape[0]} px at {self.mpp:g} um/px, enlarged {factor:.1f}x to the "
            f"{self.source_px}-px field (data.source_scale x crops.global_size), so its views are at a finer um/px "
            "than data.mpp: leave such tiles out, or check data.tile_dirs_mpp (said once)",
            UserWarning,
            stacklevel=3,
        )


class WSISource:
    """Tissue tiles of whole-slide images at a target um/px, read on the fly.

    Args:
        slides: slide paths (anything ``napari_pathdistill.wsi.open_pyramid`` reads).
        source_px: tile side in pixels at ``mpp``.
        mpp: target um/px.
        min_tissue: minimum tissue fraction of a tile.
        mpp_override: level-0 um/px of slides whose metadata has none (a file's own MPP always wins);
            None: such slides are refused (tiled in level-0 px, they would not be at ``mpp``).
        progress: with several slides, called with (slides done, total) before the first, at most every
            ``every_s`` seconds and after the last (finding each slide's tissue reads its thumbnail: about a
            second a slide, an hour for thousands).
        every_s: seconds between progress calls.

    Raises:
        TrainDataError: a slide that cannot be opened, states no um/px (without ``mpp_override``), is
            smaller than one tile, or no slide has a tissue tile.
    """

    def __init__(
        self,
        slides: Sequence[str | Path],
        source_px: int,
        mpp: float,
        min_tissue: float,
        mpp_override: float | None,
        progress: Callable[[int, int], None] | None = None,
        every_s: float = 30.0,
    ) -> None:
        self.paths = [Path(p).expanduser() for p in slides]
        self.mpp_override = mpp_override
        self.grids, self.index = [], []
        n = len(self.paths)
        report = progress if progress is not None and n > 1 else None
        if report is not None:
            report(0, n)
        last = time.monotonic()
        for si, path in enumerate(self.paths):
            grid = _slide_grid(path, source_px, mpp, min_tissue, mpp_override)
            self.grids.append(grid)
            self.index += [(si, ti) for ti in range(len(grid.coords))]
            if report is not None and (si == n - 1 or time.monotonic() - last >= every_s):
                report(si + 1, n)
                last = time.monotonic()
        if not self.index:
            raise TrainDataError(
                f"no tissue tiles with >= {min_tissue:.0%} tissue in {len(self.paths)} slide(s)"
            )
        self._open: dict[int, Pyramid] = {}

    def __len__(self) -> int:
        return len(self.index)

    def describe(self) -> list[dict[str, Any]]:
        """Each slide (its absolute path) and its number of tissue tiles (for the training record)."""
        return [
            {"slide": str(p.resolve()), "tiles": len(g.coords)}
            for p, g in zip(self.paths, self.grids, strict=True)
        ]

    def __getitem__(self, item: tuple[int, torch.Generator]) -> torch.Tensor:
        from napari_pathdistill.wsi import open_pyramid, read_tiles

        si, ti = self.index[item[0]]
        if si not in self._open:  # one handle per slide and worker process
            self._open[si] = open_pyramid(self.paths[si], fallback_mpp=self.mpp_override)
        tile = read_tiles(self._open[si], self.grids[si], [ti])[0]
        return torch.from_numpy(np.ascontiguousarray(tile)).permute(2, 0, 1)


def _slide_grid(
    path: Path, source_px: int, mpp: float, min_tissue: float, mpp_override: float | None
) -> TileGrid:
    """The tissue tile grid of one slide at ``mpp``; every failure a :class:`TrainDataError` naming the slide."""
    from napari_pathdistill.errors import WSIError
    from napari_pathdistill.wsi import detect_tissue, make_tile_grid, open_pyramid

    try:
        with open_pyramid(path, fallback_mpp=mpp_override) as pyr:
            if pyr.mpp is None:
                raise TrainDataError(
                    f"data.slides: {path} states no um/px (MPP) in its metadata, so its tiles could not be cut "
                    f"at data.mpp={mpp:g}: set data.mpp_override=UM_PER_PX (the slide's level-0 um/px, e.g. "
                    "0.25 at 40x, 0.5 at 20x), or leave the slide out"
                )
            return make_tile_grid(
                pyr, tile_px=source_px, mpp=mpp, min_tissue=min_tissue, mask=detect_tissue(pyr)
            )
    except WSIError as e:
        hint = " (lower data.mpp or crops.global_size)" if "smaller than one tile" in str(e) else ""
        raise TrainDataError(f"data.slides: {str(e).rstrip('.')}{hint}") from e


class ConcatSource:
    """Concatenate several sources into one index space."""

    def __init__(self, sources: Sequence[TileFolderSource | WSISource]) -> None:
        self.sources = [s for s in sources if len(s)]
        if not self.sources:
            raise TrainDataError("no training data: set data.slides and/or data.tile_dirs")
        self.offsets = np.cumsum([0] + [len(s) for s in self.sources])

    def describe(self) -> list[dict[str, Any]]:
        """Every slide and tile folder with its number of tiles (for the training record)."""
        return [entry for s in self.sources for entry in s.describe()]

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def __getitem__(self, item: tuple[int, torch.Generator]) -> torch.Tensor:
        index, gen = item
        k = int(np.searchsorted(self.offsets, index, side="right") - 1)
        return self.sources[k][(index - int(self.offsets[k]), gen)]
