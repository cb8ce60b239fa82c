"""Tile embedding of a slide: tiles read ahead by reader threads (bounded queue), embedded in batches,
cancellable, written to resumable HDF5 (``embed_slide``) and plismbench ``features.npy`` (``write_plism``)."""

from __future__ import annotations

import contextlib
import threading
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from napari_pathdistill.errors import PathDistillError
from napari_pathdistill.inference.batches import iter_batches
from napari_pathdistill.inference.plism_output import write_plism as write_plism  # re-exported
from napari_pathdistill.progress import Progress
from napari_pathdistill.wsi.pyramid import Pyramid
from napari_pathdistill.wsi.tiling import TileGrid

if TYPE_CHECKING:  # torch-free at import: reading feature files needs no model
    from napari_pathdistill.models.embedding_model import EmbeddingModel


@dataclass
class EmbeddingResult:
    """Embeddings of the tiles of one grid.

    Attributes:
        features: (N, D) float32, row i = tile ``grid.coords[i]``.
        grid: the tile grid.
        model_name: the model's registry/checkpoint name.
        weights: 16 hex digits naming the loaded weights (``EmbeddingModel.weights_id``; a feature file's
            ``weights`` attr), None when unknown (CLAM/TRIDENT files).
    """

    features: np.ndarray
    grid: TileGrid
    model_name: str
    weights: str | None = None


def tile_geometry(model: EmbeddingModel, tile_px: int | None, mpp: float | None) -> tuple[int, float]:
    """``(tile_px, mpp)`` of the tiles to cut for ``model``: each one, when None (or 0), is the model's own
    (``model.spec.tile_px`` / ``model.spec.mpp``, its training resolution).

    Raises:
        PathDistillError: ``tile_px`` differs from the input size of a model that only takes its own (a ViT
            with a fixed position-embedding grid), instead of timm's AssertionError at the first batch.
    """
    px = int(tile_px or model.spec.tile_px)
    fixed = _fixed_input_px(model.module)
    if fixed is not None and px != fixed:
        raise PathDistillError(
            f"{model.spec.name} takes {fixed} px tiles only (its patch grid is fixed); got tile px {px}. Use "
            f"{fixed} px (the model's default) and choose the magnification with um/px instead."
        )
    return px, float(mpp or model.spec.mpp)


def _fixed_input_px(module: Any) -> int | None:
    """The one input side a timm ViT accepts (``patch_embed.img_size`` with strict sizing), else None."""
    pe = getattr(module, "patch_embed", None)
    size = getattr(pe, "img_size", None)
    if pe is None or size is None or not getattr(pe, "strict_img_size", False):
        return None
    if getattr(module, "dynamic_img_size", False) or getattr(pe, "dynamic_img_pad", False):
        return None
    return int(size[0]) if size[0] == size[1] else None


def iter_embeddings(
    model: EmbeddingModel,
    pyramid: Pyramid,
    grid: TileGrid,
    *,
    batch_size: int = 32,
    num_workers: int = 2,
    prefetch: int | None = None,
    cancel: threading.Event | None = None,
    read_fn: Callable[[Pyramid, TileGrid, Any], np.ndarray] | None = None,
) -> Iterator[Progress | EmbeddingResult]:
    """Embed every tile of ``grid``; yields ``Progress(done, N, "embedding")`` per batch, then the result.

    Reading runs ahead of the model by up to ``prefetch`` batches (see :func:`iter_batches`, which also
    describes ``read_fn``). When ``cancel`` is set the generator stops without yielding a result.
    """
    n = len(grid.coords)
    feats: list[np.ndarray] = []
    done = 0
    for _start, batch in iter_batches(
        model,
        pyramid,
        grid,
        batch_size=batch_size,
        num_workers=num_workers,
        prefetch=prefetch,
        cancel=cancel,
        read_fn=read_fn,
    ):
        feats.append(batch)
        done += len(batch)
        yield Progress(done, n, "embedding")
    if done < n:
        return
    out = np.concatenate(feats).astype(np.float32) if feats else np.zeros((0, model.dim), np.float32)
    yield EmbeddingResult(out, grid, model.spec.name, model.weights_id)


def embed_slide(
    slide: str | Path,
    model: EmbeddingModel,
    out_dir: str | Path,
    *,
    tile_px: int | None = None,
    mpp: float | None = None,
    fallback_mpp: float | None = None,
    min_tissue: float = 0.5,
    batch_size: int = 32,
    chunk_batches: int = 4,
    num_workers: int = 2,
    prefetch: int | None = None,
    overwrite: bool = False,
    map_k: int | None = 6,
    cancel: threading.Event | None = None,
    progress: Callable[[Progress], None] | None = None,
) -> Path:
    """Embed the tissue tiles of ``slide`` into ``<out_dir>/<slide stem>.h5`` (CLAM/TRIDENT layout).

    Datasets ``features`` (N, D) float32 and ``coords`` (N, 2) int64 level-0 (x, y); attrs ``model``, ``spec``
    (JSON), ``tile_px``, ``mpp`` (NaN when the slide has no MPP), ``min_tissue``, ``patch_level`` (0),
    ``patch_size_level0``, ``slide_path`` and ``warning``, one line per warning: a slide without MPP (also a
    :class:`NoMPPWarning`), tiles that tissue detection could not decode (counted as background); group
    ``map`` (PCA scores, k-means labels: ``inference.map_summary``) unless ``map_k`` is None. Rows are written
    every ``chunk_batches`` batches into ``<name>.h5.partial`` with a ``done`` attr, so a killed or cancelled
    run resumes there; the file is renamed to ``.h5`` only when complete. Tiles are read
    ahead across chunks (``num_workers`` threads, ``prefetch`` batches, see :func:`iter_batches`). The slide is
    locked (``<name>.h5.lock``, see :mod:`~napari_pathdistill.inference.outputs`) while it is written (a
    complete output is checked before, without it: also in a read-only folder); a
    complete ``.h5`` of the same model, spec, tile px, um/px and min tissue and of the same slide is kept
    (reported as ``Progress(N, N, "skipped")``) unless ``overwrite``; a complete one of another embedding or
    slide (same file stem) is never replaced without ``overwrite`` (``outputs.OutputMismatchError``).

    Args:
        tile_px, mpp: tile side (px) and um/px; None: the model's (see :func:`tile_geometry`).
        fallback_mpp: level-0 um/px of a slide whose file states none (a file's own MPP always wins; without
            either, tiles are cut in level-0 px), see ``wsi.open_pyramid``.
        min_tissue: minimum tissue fraction of a tile (0 keeps the whole grid, without tissue detection).
        overwrite: recompute even when a complete output exists (of this or of another embedding or slide).
        map_k: clusters of the stored map summary (the Embed widget's default k); None stores none.
        progress: called with ``Progress(done, N, "embedding")`` after every written chunk, and first with
            ``Progress(done, N, "resumed")`` when a partial output's rows are resumed.

    Returns:
        The path of the finished HDF5 file (or of the ``.partial`` file when cancelled).

    Raises:
        WSIError: the slide cannot be read.
        EmptyTissueError: no tile has at least ``min_tissue`` tissue (nothing is written).
        PathDistillError: the output would pass this process's file-size limit (``ulimit -f``; nothing is written).
        SlideBusyError: another process is writing this slide's output.
        OutputMismatchError: without ``overwrite``, a complete output of another embedding or of another slide
            with the same file stem exists (it is kept; nothing is computed).
    """
    from napari_pathdistill.errors import CorruptTileWarning
    from napari_pathdistill.inference.disk_room import output_bytes, require_size_limit
    from napari_pathdistill.inference.feature_writer import open_partial, slide_attrs, write_rows
    from napari_pathdistill.inference.map_summary import summarise_partial
    from napari_pathdistill.inference.output_lock import slide_lock
    from napari_pathdistill.inference.outputs import finish_output, skipped_message
    from napari_pathdistill.wsi import open_pyramid

    out = output_path(slide, out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tile_px, mpp = tile_geometry(model, tile_px, mpp)
    with open_pyramid(slide, fallback_mpp=fallback_mpp) as pyr, contextlib.ExitStack() as locked:
        pyr.require_brightfield("embedding")
        attrs = slide_attrs(pyr, model, tile_px, mpp, min_tissue)
        # a complete output appears whole (renamed into place): kept without taking the lock, so also where the
        # folder is read-only (an archive of features)
        if not overwrite and _kept(out, attrs, progress):
            return out
        locked.enter_context(slide_lock(out))
        if not overwrite and _kept(out, attrs, progress):  # another process finished it meanwhile
            return out
        grid = _slide_grid(pyr, attrs, tile_px, mpp, min_tissue)
        # refused before embedding, not at the last write after hours of it
        require_size_limit(out, output_bytes(len(grid), model.dim))
        with open_partial(out.with_suffix(".h5.partial"), model, grid, attrs) as f:
            done = int(f.attrs["done"])  # resumed rows (all of them when killed before the rename)
            if done and progress is not None:  # where a resumed run starts (the only item when all are done)
                progress(Progress(done, len(grid), "resumed"))
            for done in write_rows(f, model, pyr, grid, batch_size=batch_size, chunk_batches=chunk_batches,
                                   num_workers=num_workers, prefetch=prefetch, cancel=cancel):  # fmt: skip
                if progress is not None:
                    progress(Progress(done, len(grid), "embedding"))
        if done < len(grid.coords):
            return out.with_suffix(".h5.partial")
        if map_k:  # PCA + k-means stored: dropping the file on napari shows its map without refitting
            summarise_partial(out.with_suffix(".h5.partial"), map_k)
        n_skipped = finish_output(out.with_suffix(".h5.partial"), out)
        if n_skipped:
            warnings.warn(f"{pyr.path.name}: {skipped_message(n_skipped)}", CorruptTileWarning, stacklevel=2)
    return out


def _kept(out: Path, attrs: dict, progress: Callable[[Progress], None] | None) -> bool:
    """Whether ``out`` is a complete output of ``attrs`` (reported as ``Progress(N, N, "skipped")``).

    Raises:
        OutputMismatchError: ``out`` is complete and of another embedding or slide (``outputs.reusable_rows``).
    """
    from napari_pathdistill.inference.outputs import reusable_rows

    n_done = reusable_rows(out, attrs)
    if n_done and progress is not None:
        progress(Progress(n_done, n_done, "skipped"))
    return bool(n_done)


def _slide_grid(pyr: Pyramid, attrs: dict, tile_px: int, mpp: float, min_tissue: float) -> TileGrid:
    """The tissue grid of ``pyr``; adds ``patch_size_level0`` and tissue detection's warnings to ``attrs`` and
    warns :class:`NoMPPWarning` for a slide without MPP."""
    from napari_pathdistill.inference.feature_writer import add_warnings, tissue_grid, tissue_warnings

    no_mpp = attrs.get("warning")
    grid = tissue_grid(pyr, tile_px, mpp, min_tissue)
    attrs["patch_size_level0"] = round(grid.size_level0)
    add_warnings(attrs, tissue_warnings(pyr))  # the CorruptTileWarning itself came from Pyramid.thumbnail
    if no_mpp:
        warnings.warn(f"{pyr.path.name}: {no_mpp}", NoMPPWarning, stacklevel=3)
    return grid


def output_path(slide: str | Path, out_dir: str | Path) -> Path:
    """``<out_dir>/<slide stem>.h5``, where :func:`embed_slide` writes ``slide``."""
    return Path(out_dir) / f"{Path(slide).stem}.h5"


def output_clashes(slides: Iterable[str | Path]) -> list[list[str]]:
    """Groups of ``slides`` that are different files with the same output name (:func:`output_path`): each
    would be refused (or, with overwrite, replaced) by the other's output. The same file given twice is no
    clash."""
    by_name: dict[str, dict[Path, str]] = {}
    for slide in slides:
        same_name = by_name.setdefault(output_path(slide, ".").name, {})
        same_name.setdefault(Path(slide).expanduser().resolve(), str(slide))
    return [list(paths.values()) for paths in by_name.values() if len(paths) > 1]


class NoMPPWarning(UserWarning):
    """A slide states no um/px: its tiles are cut in level-0 pixels, not at the model's resolution."""
