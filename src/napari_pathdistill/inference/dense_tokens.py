"""The patch tokens of a dense map (``inference.dense_maps``): a ViT's tokens per tile, the 3-component PCA
fitted on a seeded sample of tiles, and the canvas the other tiles' projected scores are summed into on the
model's device, batch by batch (no Qt)."""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Generator
from typing import Any

import numpy as np
import torch

from napari_pathdistill.errors import CorruptTileError, PathDistillError
from napari_pathdistill.inference.embed import iter_batches
from napari_pathdistill.models.embedding_model import EmbeddingModel
from napari_pathdistill.progress import Progress
from napari_pathdistill.wsi.pyramid import Pyramid
from napari_pathdistill.wsi.tiling import TileGrid


def patch_size(model: EmbeddingModel) -> int:
    """Side in model px of a ViT's patches.

    Raises:
        PathDistillError: the model has no patch tokens (a CNN, or a module without ``patch_embed``).
    """
    pe = getattr(model.module, "patch_embed", None)
    size = getattr(pe, "patch_size", None)
    if model.spec.family != "vit" or size is None:
        raise PathDistillError(
            f"{model.spec.name} is not a ViT: dense maps need a ViT with patch tokens; use the tile-level map."
        )
    return int(size[0] if isinstance(size, tuple | list) else size)


def _token_fn(model: EmbeddingModel, pca: tuple[torch.Tensor, torch.Tensor] | None) -> Callable[[Any], Any]:
    """Host tiles -> (B, gh, gw, D) tokens, or their (B, gh, gw, 3) scores on ``pca`` = (mean, components)."""
    p = patch_size(model)
    amp = model.amp_dtype

    @torch.inference_mode()
    def run(tiles: Any) -> Any:
        x = model.preprocess(tiles)
        with torch.autocast(model.device.type, dtype=amp, enabled=amp != torch.float32):
            tokens = model.forward_tokens(x)[:, model.num_prefix_tokens :].float()
        tokens = tokens.reshape(len(x), x.shape[2] // p, x.shape[3] // p, -1)
        return tokens if pca is None else (tokens - pca[0]) @ pca[1].T

    return run


class TokenCanvas:
    """Sums (H, W, 3) float32 and counts (H, W) uint16 of the scores of tiles placed at cell offsets."""

    def __init__(self, shape: tuple[int, int]) -> None:
        self.sums = np.zeros((*shape, 3), np.float32)
        self.counts = np.zeros(shape, np.uint16)

    def add(self, offsets: np.ndarray, scores: np.ndarray) -> None:
        """Add (b, gh, gw, 3) ``scores`` of tiles whose first cells are ``offsets`` (b, 2)."""
        gh, gw = scores.shape[1:3]
        for (r, c), s in zip(offsets, scores, strict=True):
            self.sums[r : r + gh, c : c + gw] += s
            self.counts[r : r + gh, c : c + gw] += 1


def fit_pca(tokens: np.ndarray, d: int) -> tuple[np.ndarray, np.ndarray]:
    """(M, D) tokens -> (mean (D,), components (3, D)) float32, seeded; missing components are zero rows."""
    from napari_pathdistill.metrics.features import pca_axes

    comps, p = np.zeros((3, d), np.float32), min(3, len(tokens) - 1, d)
    if p > 0:
        comps[:p] = pca_axes(tokens, p, fit_rows=len(tokens))[1]
    return tokens.mean(0, dtype=np.float64).astype(np.float32), comps


def map_tiles(
    model: EmbeddingModel, pyramid: Pyramid, grid: TileGrid, offsets: np.ndarray, canvas: TokenCanvas,
    batch_size: int, n_fit_tokens: int, cancel: threading.Event | None, skipped: list[int],
) -> Generator[Progress, None, tuple[np.ndarray, np.ndarray] | None]:  # fmt: skip
    """Fit the PCA on the tokens of random tiles (projected into ``canvas`` from memory), then compute and
    project the other tiles on the model's device; returns (mean, components), or None when cancelled. A tile
    that cannot be decoded is left out (its grid index appended to ``skipped``), as the tile-level map does.

    Raises:
        CorruptTileError: not one tile of the PCA sample can be decoded.
    """
    n, g2 = len(grid), (grid.tile_px // patch_size(model)) ** 2
    n_fit = min(n, max(1, math.ceil(n_fit_tokens / g2)))
    fit = np.sort(np.random.default_rng(0).choice(n, n_fit, replace=False))
    tokens, tokens_of, bad = [], _token_fn(model, None), list[int]()
    for start, batch in iter_batches(model, pyramid, grid.subset(fit), batch_size=batch_size, cancel=cancel,
                                     skipped=bad, embed=lambda t: tokens_of(t).cpu().numpy()):  # fmt: skip
        tokens.append(batch)
        yield Progress(start + len(batch), n, "patch tokens")
    if sum(map(len, tokens)) < len(fit):
        return None
    readable = np.setdiff1d(np.arange(len(fit)), bad)
    skipped.extend(fit[bad].tolist())
    if not len(readable):
        raise CorruptTileError(f"{pyramid.path.name}: none of the {len(fit)} tiles the patch-token PCA is fitted "
                               "on can be decoded (the slide file is corrupt there).")  # fmt: skip
    fitted = np.concatenate(tokens)[readable]
    mean, comps = fit_pca(fitted.reshape(-1, fitted.shape[-1]), fitted.shape[-1])
    canvas.add(offsets[fit[readable]], (fitted - mean) @ comps.T)
    rest, bad_rest = np.setdiff1d(np.arange(n), fit), list[int]()
    done = yield from _project_rest(model, pyramid, grid.subset(rest), offsets[rest], canvas, (mean, comps),
                                    (batch_size, n), cancel, bad_rest)  # fmt: skip
    skipped.extend(rest[bad_rest].tolist())
    return (mean, comps) if done == len(rest) else None


def _project_rest(
    model: EmbeddingModel, pyramid: Pyramid, grid: TileGrid, offsets: np.ndarray, canvas: TokenCanvas,
    pca: tuple[np.ndarray, np.ndarray], sizes: tuple[int, int], cancel: threading.Event | None, bad: list[int],
) -> Generator[Progress, None, int]:  # fmt: skip
    """Project the tiles of ``grid`` on ``pca`` into ``canvas`` batch by batch; ``sizes`` = (batch size, total
    tiles, of which ``grid`` holds the last); returns how many were done. Undecodable tiles are appended to
    ``bad`` (indices into ``grid``) and left out of ``canvas``."""
    mean, comps = (torch.from_numpy(a).to(model.device) for a in pca)
    project = _token_fn(model, (mean, comps))
    done, total = 0, sizes[1]
    for start, batch in iter_batches(model, pyramid, grid, batch_size=sizes[0], cancel=cancel, skipped=bad,
                                     embed=lambda t: project(t).cpu().numpy()):  # fmt: skip
        ok = np.setdiff1d(np.arange(len(batch)), np.asarray(bad, int) - start)
        canvas.add(offsets[start + ok], batch[ok])
        done += len(batch)
        yield Progress(total - len(offsets) + done, total, "patch tokens")
    return done
