"""Tile sources: random fields sampled on the fly from WSIs (tissue grid) or from a folder of tile images.

A source returns, for an index and an RNG, a (3, S, S) uint8 field of ``S = source_px`` pixels at the
target um/px. WSIs are tiled with ``napari_pathdistill.wsi`` (open_pyramid / detect_tissue /
make_tile_grid / read_tiles) at ``source_px`` and the target ``mpp``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image

from pathdistill_train.errors import TrainDataError

if TYPE_CHECKING:
    from napari_pathdistill.wsi.pyramid import Pyramid

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")


def _to_rgb(img: Image.Image) -> np.ndarray:
    """PIL image -> (H, W, 3) uint8 RGB, alpha composited on white."""
    if img.mode in ("RGBA", "LA", "P"):
        img = img.convert("RGBA")
        bg = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(bg, img)
    return np.asarray(img.convert("RGB"))


class TileFolderSource:
    """Every image in a folder (recursively), rescaled from ``folder_mpp`` to ``mpp``, random crops.

    Args:
        root: folder of tile images.
        source_px: side of the returned field in pixels.
        folder_mpp: um/px of the images (None: already at the target).
        mpp: target um/px.
    """

    def __init__(self, root: str | Path, source_px: int, folder_mpp: float | None, mpp: float) -> None:
        root = Path(root)
        self.paths = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        if not self.paths:
            raise TrainDataError(f"no tile images ({', '.join(IMAGE_SUFFIXES)}) under {root}")
        self.source_px, self.scale = source_px, (folder_mpp / mpp if folder_mpp else 1.0)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, item: tuple[int, torch.Generator]) -> torch.Tensor:
        index, gen = item
        with Image.open(self.paths[index]) as im:
            rgb = _to_rgb(im)
        h, w = rgb.shape[:2]
        if self.scale != 1.0:
            h, w = max(1, round(h * self.scale)), max(1, round(w * self.scale))
            rgb = np.asarray(Image.fromarray(rgb).resize((w, h), Image.Resampling.BICUBIC))
        s = self.source_px
        if min(h, w) < s:
            pad = np.full((max(h, s), max(w, s), 3), 255, np.uint8)
            pad[:h, :w] = rgb
            rgb, h, w = pad, pad.shape[0], pad.shape[1]
        y = int(torch.randint(0, h - s + 1, (1,), generator=gen))
        x = int(torch.randint(0, w - s + 1, (1,), generator=gen))
        return torch.from_numpy(np.ascontiguousarray(rgb[y : y + s, x : x + s])).permute(2, 0, 1)


class WSISource:
    """Tissue tiles of whole-slide images at a target um/px, read on the fly.

    Args:
        slides: slide paths (anything ``napari_pathdistill.wsi.open_pyramid`` reads).
        source_px: tile side in pixels at ``mpp``.
        mpp: target um/px.
        min_tissue: minimum tissue fraction of a tile.
        mpp_override: level-0 um/px of slides whose metadata has none (a file's own MPP always wins);
            None: such slides are tiled in level-0 px.
    """

    def __init__(
        self,
        slides: Sequence[str | Path],
        source_px: int,
        mpp: float,
        min_tissue: float,
        mpp_override: float | None,
    ) -> None:
        from napari_pathdistill.wsi import detect_tissue, make_tile_grid, open_pyramid

        self.paths = [Path(p) for p in slides]
        self.grids, self.index = [], []
        for si, path in enumerate(self.paths):
            with open_pyramid(path, fallback_mpp=mpp_override) as pyr:
                grid = make_tile_grid(
                    pyr, tile_px=source_px, mpp=mpp, min_tissue=min_tissue, mask=detect_tissue(pyr)
                )
            self.grids.append(grid)
            self.index += [(si, ti) for ti in range(len(grid.coords))]
        if not self.index:
            raise TrainDataError(
                f"no tissue tiles with >= {min_tissue:.0%} tissue in {len(self.paths)} slide(s)"
            )
        self._open: dict[int, Pyramid] = {}

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, item: tuple[int, torch.Generator]) -> torch.Tensor:
        from napari_pathdistill.wsi import open_pyramid, read_tiles

        si, ti = self.index[item[0]]
        if si not in self._open:  # one handle per slide and worker process
            self._open[si] = open_pyramid(self.paths[si])
        tile = read_tiles(self._open[si], self.grids[si], [ti])[0]
        return torch.from_numpy(np.ascontiguousarray(tile)).permute(2, 0, 1)


class ConcatSource:
    """Concatenate several sources into one index space."""

    def __init__(self, sources: Sequence[TileFolderSource | WSISource]) -> None:
        self.sources = [s for s in sources if len(s)]
        if not self.sources:
            raise TrainDataError("no training data: set data.slides and/or data.tile_dirs")
        self.offsets = np.cumsum([0] + [len(s) for s in self.sources])

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def __getitem__(self, item: tuple[int, torch.Generator]) -> torch.Tensor:
        index, gen = item
        k = int(np.searchsorted(self.offsets, index, side="right") - 1)
        return self.sources[k][(index - int(self.offsets[k]), gen)]
