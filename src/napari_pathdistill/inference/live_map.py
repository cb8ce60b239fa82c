"""The Embed widget's slide map, computed through the feature cache and shown while the model runs.

Pure core (no Qt/napari). :func:`iter_live_map` yields :class:`Progress`, then every written chunk a small
:class:`PartialMap` (the new tiles' raster cells and PCA colours: the widget paints them into one preallocated
raster), then the final :class:`~napari_pathdistill.inference.slide_maps.SlideMap` (PCA refitted on all tiles,
k-means). Features go to the cache file of ``inference.feature_cache`` with ``pathdistill embed``'s writer
(``.partial`` + ``done`` attr, lock, rename when complete): a cancelled or killed run resumes where it stopped,
and a complete matching file is read instead of running the model.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from napari_pathdistill.errors import Cancelled
from napari_pathdistill.inference.embed import EmbeddingResult, tile_geometry
from napari_pathdistill.inference.feature_cache import cache_file, ensure_cache_dir, find_complete
from napari_pathdistill.inference.feature_writer import open_partial, slide_attrs, tissue_grid, write_rows
from napari_pathdistill.inference.map_summary import MapSummary, summarise_partial
from napari_pathdistill.inference.output_lock import slide_lock
from napari_pathdistill.inference.outputs import finish_output
from napari_pathdistill.inference.similarity_map import prepared
from napari_pathdistill.inference.slide_maps import SlideMap, build_slide_map
from napari_pathdistill.metrics.features import pca_axes
from napari_pathdistill.progress import Progress, shielded
from napari_pathdistill.wsi.pyramid import Pyramid, layer_factor, open_pyramid, scale_placement
from napari_pathdistill.wsi.tiling import TileGrid, grid_placement, make_tile_grid

if TYPE_CHECKING:  # torch-free at import: reading feature files needs no model
    from napari_pathdistill.models.embedding_model import EmbeddingModel

#: tiles the live PCA is first fitted on; a slide of fewer than ``REFIT_GROWTH * FIT_ROWS`` tiles waits for a
#: ``REFIT_GROWTH``-th of them only (at least :data:`MIN_FIT_ROWS`), so that its map paints long before its end
#: (:func:`first_fit_rows`)
FIT_ROWS = 256
#: the fewest tiles the first live PCA waits for (all of them on a slide of fewer)
MIN_FIT_ROWS = 8
#: the live PCA is refitted each time the embedded tiles grow by this factor (tiles come in row-major order,
#: so the first ones are the top band of the slide), and the tiles shown so far are repainted
REFIT_GROWTH = 4
#: rows (evenly spread over those embedded) a refit uses at most
REFIT_MAX_ROWS = 4_096
#: rows coloured per matrix product (bounds the (rows, D) temporary of a repaint)
COLOUR_CHUNK = 8_192


@dataclass
class PartialMap:
    """Tiles to (re)paint, with live PCA colours.

    Attributes:
        shape: (rows, cols) of the map raster (the final ``SlideMap.index_image``'s).
        scale, translate: napari placement of the raster (slide-layer units).
        cells: (b, 2) int64 (row, col) raster cells of the tiles coloured by this update: the tiles embedded
            since the previous update, or every tile so far after a refit (``refit``).
        rgb: (b, 3) float32 colours in [0, 1] (the live PCA, clipped to its fitted range).
        done, total: tiles embedded so far / in the grid.
        refit: the live PCA was refitted: this update recolours every tile shown so far.
    """

    shape: tuple[int, int]
    scale: tuple[float, float]
    translate: tuple[float, float]
    cells: np.ndarray
    rgb: np.ndarray
    done: int
    total: int
    refit: bool = False


def first_fit_rows(fit_rows: int, n: int) -> int:
    """Tiles the first live PCA of a slide of ``n`` tiles waits for: ``fit_rows``, or a :data:`REFIT_GROWTH`-th
    of the tiles when that is fewer (at least :data:`MIN_FIT_ROWS`, at most ``n``). A 221-tile slide is first
    fitted on 56 tiles, not on all 221 at its end: its live map paints while it runs, and Cancel keeps it."""
    return max(1, min(fit_rows, n, max(MIN_FIT_ROWS, math.ceil(n / REFIT_GROWTH))))


class LiveColours:
    """PCA colours of the tiles embedded so far: fitted on the first tiles, refitted (on rows spread over all
    embedded ones) each time their number grows :data:`REFIT_GROWTH`-fold; each refit keeps the previous axes'
    orientation, so colours sharpen instead of inverting.

    Args:
        grid: the tile grid; features: its (N, D) rows, filled in as they are embedded.
        fit_rows: rows the first PCA waits for (:func:`first_fit_rows`: fewer on a slide of fewer than
            ``REFIT_GROWTH * fit_rows`` tiles).
        to_layer: slide-layer units per unit of the grid's geometry (``wsi.pyramid.layer_factor``).
    """

    def __init__(
        self, grid: TileGrid, features: np.ndarray, fit_rows: int = FIT_ROWS, to_layer: float = 1.0
    ) -> None:
        self.features, self.shown, self.fitted_on = features, 0, 0
        self.fit_rows = first_fit_rows(fit_rows, len(features))
        size = grid.size_level0
        self.cells = np.stack([np.round(grid.coords[:, 1] / size), np.round(grid.coords[:, 0] / size)], 1)
        self.cells = self.cells.astype(np.int64)
        self.placement = _scaled(grid_placement(grid), to_layer)
        self.basis: tuple[np.ndarray, ...] | None = None

    @property
    def axes(self) -> np.ndarray | None:
        """(p, D) float32 principal axes of the live colours; None until fitted (a fully resumed run)."""
        return None if self.basis is None else self.basis[1]

    def update(self, done: int) -> PartialMap | None:
        """The :class:`PartialMap` of rows ``[shown, done)``, or of ``[0, done)`` after a refit; None while
        fewer than ``fit_rows`` are done."""
        if done < self.fit_rows or done <= self.shown:
            return None
        refit = self.basis is not None and done >= REFIT_GROWTH * self.fitted_on and done < len(self.features)
        if self.basis is None or refit:  # rows spread over all those embedded (a resumed run has many)
            self._fit_spread(done)
            self.shown = 0 if refit else self.shown
        return self._part(done, refit)

    def flush(self, done: int) -> PartialMap | None:
        """The :class:`PartialMap` of the rows ``[shown, done)`` not painted yet, the PCA fitted on the rows
        done when it still waits for ``fit_rows`` (a cancelled run paints every tile it embedded); None when
        there is nothing to paint (or a single row: no PCA)."""
        if done <= self.shown or done < 2:
            return None
        if self.basis is None:
            self._fit_spread(done)
        return self._part(done, False)

    def _fit_spread(self, done: int) -> None:
        self._fit(np.unique(np.linspace(0, done - 1, min(done, REFIT_MAX_ROWS)).astype(np.int64)))

    def _part(self, done: int, refit: bool) -> PartialMap:
        """Colour rows ``[shown, done)`` into a :class:`PartialMap`; they count as shown."""
        rgb = np.concatenate([self._colours(i, min(i + COLOUR_CHUNK, done))
                              for i in range(self.shown, done, COLOUR_CHUNK)])  # fmt: skip
        shape, scale, translate = self.placement
        cells = self.cells[self.shown : done]
        out = PartialMap(shape, scale, translate, cells, rgb, done, len(self.features), refit)  # type: ignore[arg-type]
        self.shown = done
        return out

    def _colours(self, start: int, stop: int) -> np.ndarray:
        """(stop - start, 3) float32 colours of rows ``[start, stop)`` (missing components 0.5)."""
        assert self.basis is not None
        mu, vt, lo, span = self.basis
        block = np.nan_to_num(self.features[start:stop]) - mu
        rgb = np.full((len(block), 3), 0.5, np.float32)
        rgb[:, : len(vt)] = np.clip((block @ vt.T - lo) / span, 0, 1)
        return rgb

    def _fit(self, rows: np.ndarray) -> None:
        x = np.nan_to_num(self.features[rows])  # an undecodable tile's row is NaN
        mu, vt = pca_axes(x, min(3, len(x) - 1, x.shape[1]), fit_rows=len(x))  # the project's PCA, all rows
        if self.basis is not None:  # point each axis the way the previous one did: no colour inversion
            previous = self.basis[1].astype(np.float64)
            q = min(len(vt), len(previous))
            vt[:q] *= np.where(np.einsum("ij,ij->i", vt[:q], previous[:q]) < 0, -1.0, 1.0)[:, None]
        scores = (x.astype(np.float64) - mu) @ vt.T
        lo, span = scores.min(0), np.ptp(scores, axis=0)
        self.basis = (mu.astype(np.float32), vt.astype(np.float32), lo, np.where(span > 0, span, 1.0))
        self.fitted_on = int(rows[-1]) + 1


def _scaled(
    placement: tuple[tuple[int, int], tuple[float, float], tuple[float, float]], f: float
) -> tuple[tuple[int, int], tuple[float, float], tuple[float, float]]:
    shape, scale, translate = placement
    return shape, *scale_placement(scale, translate, f)


def _on_layer(smap: SlideMap, f: float) -> SlideMap:
    """``smap`` placed on its slide layer (``wsi.pyramid.layer_factor``), its similarity search prepared."""
    if f != 1.0:
        scale, translate = scale_placement(smap.scale, smap.translate, f)
        smap = dataclasses.replace(smap, scale=scale, translate=translate)
    return prepared(smap)


def map_placement(
    slide: str | Path, tile_px: int, mpp: float, fallback_mpp: float | None = None
) -> tuple[tuple[int, int], tuple[float, float], tuple[float, float]]:
    """(rows, cols), napari scale and translate of the map raster :func:`iter_live_map` paints for ``slide`` at
    ``tile_px`` / ``mpp`` (the tile grid's geometry: no tissue detection, a few ms). The Embed widget creates
    its map layers with it when Embed is pressed, so that napari's layer creation (0.1-0.4 s each) is not a
    stall while the user pans the slide during the run.

    Raises:
        WSIError: the slide cannot be read or is smaller than one tile.
    """
    with open_pyramid(slide, fallback_mpp=fallback_mpp) as pyr:
        grid = make_tile_grid(pyr, tile_px=tile_px, mpp=mpp, min_tissue=0.0)
        return _scaled(grid_placement(grid), layer_factor(pyr))


def iter_live_map(
    model: EmbeddingModel,
    slide: str | Path,
    cache_dir: str | Path,
    *,
    tile_px: int | None = None,
    mpp: float | None = None,
    min_tissue: float = 0.5,
    batch_size: int = 32,
    chunk_batches: int = 2,
    num_workers: int = 2,
    k: int = 8,
    fit_rows: int = FIT_ROWS,
    fallback_mpp: float | None = None,
    cancel: threading.Event | None = None,
) -> Iterator[Progress | PartialMap | SlideMap]:
    """Embed ``slide`` into its cache file (resuming a partial one) or read a complete one; yields Progress,
    :class:`PartialMap` after every written chunk of ``chunk_batches`` batches, then one SlideMap.

    ``fallback_mpp`` is the level-0 um/px of a slide whose file states none (a file's own MPP wins): its tiles
    are then cut at ``mpp`` like any other slide's (and cached apart from those cut without it), and the maps
    are placed in level-0 pixels, as napari shows such a slide. Without it such a slide is tiled in level-0
    pixels (the file's ``warning`` attr says so).

    Raises:
        WSIError: the slide cannot be read. EmptyTissueError: no tile has ``min_tissue`` tissue.
        SlideBusyError: another process writes the same cache file. Cancelled: ``cancel`` was set (the rows
        written so far stay in the ``.partial`` cache file; the next run resumes them); a last
        :class:`PartialMap` of the tiles not painted yet comes first (``LiveColours.flush``).
    """
    tile_px, mpp = tile_geometry(model, tile_px, mpp)
    with open_pyramid(slide, fallback_mpp=fallback_mpp) as pyr:
        pyr.require_brightfield("embedding")
        attrs, to_layer = slide_attrs(pyr, model, tile_px, mpp, min_tissue), layer_factor(pyr)
        cached = find_complete(cache_dir, slide, attrs)
        if cached is not None:
            yield Progress(1, 1, f"reading cached {cached.name}")
            yield _on_layer(_map_from_file(cached, pyr, tile_px, mpp, k), to_layer)
            return
        yield Progress(0, 0, "tissue detection")
        grid = tissue_grid(pyr, tile_px, mpp, min_tissue)
        attrs["patch_size_level0"] = round(grid.size_level0)
        out = cache_file(cache_dir, slide, attrs)
        ensure_cache_dir(out.parent)  # one clear line, not an OSError of h5py's
        with slide_lock(out):
            partial = out.with_suffix(".h5.partial")
            with open_partial(partial, model, grid, attrs) as f:
                feats = np.zeros((len(grid), model.dim), np.float32)
                resumed = int(f.attrs["done"])
                feats[:resumed] = f["features"][:resumed]
                live = LiveColours(grid, feats, fit_rows, to_layer)
                flushed = write_rows(f, model, pyr, grid, batch_size=batch_size, chunk_batches=chunk_batches,
                                     num_workers=num_workers, cancel=cancel, rows=feats)  # fmt: skip
                for done in itertools.chain([resumed], flushed):  # the resumed rows first
                    yield Progress(done, len(grid), "embedding")
                    with (
                        shielded()
                    ):  # a cancelled run still paints what it embedded (cancel stops write_rows)
                        update = live.update(done)
                    if update is not None:
                        yield update
            if done < len(grid):
                with shielded():
                    update = live.flush(done)
                if update is not None:  # what was embedded stays on screen
                    yield update
                raise Cancelled(f"Embedding cancelled; {done} of {len(grid)} tiles kept in {partial}.")
            yield Progress(0, 0, "PCA and k-means")
            # stored: a re-open needs no refit; oriented as the live colours, so that no channel inverts
            summary = summarise_partial(partial, k, feats, reference_axes=live.axes)
            finish_output(partial, out)
    result = EmbeddingResult(feats, grid, model.spec.name, model.weights_id)
    yield _on_layer(_final_map(out, result, k, summary), to_layer)


def _final_map(out: Path, result: EmbeddingResult, k: int, summary: MapSummary | None) -> SlideMap:
    """The SlideMap of the finished file: the in-memory rows, less those ``finish_output`` left out."""
    import h5py

    feats, grid = result.features, result.grid

    with h5py.File(out, "r") as f:
        coords = f["coords"][()]
    if len(coords) != len(grid):  # undecodable tiles were dropped from the file
        width = grid.slide_shape[1] + 1
        keep = np.isin(grid.coords[:, 0] + grid.coords[:, 1] * width, coords[:, 0] + coords[:, 1] * width)
        grid = grid.subset(keep)
        feats = feats[keep]
    smap = build_slide_map(dataclasses.replace(result, features=feats, grid=grid), k, summary=summary)
    return dataclasses.replace(smap, features_file=out)


def _map_from_file(path: Path, pyr: Pyramid, tile_px: int, mpp: float, k: int) -> SlideMap:
    """The SlideMap of a complete cached file (no tissue detection: the grid geometry comes from the slide)."""
    from napari_pathdistill.inference.feature_files import read_feature_file

    ff = read_feature_file(path)  # tissue fractions NaN / no stored map in files cached before they existed
    assert ff.tissue_fraction is not None  # read_feature_file always fills it
    geometry = make_tile_grid(pyr, tile_px=tile_px, mpp=mpp, min_tissue=0.0)  # size, level, shape only
    grid = dataclasses.replace(geometry, coords=ff.coords, tissue_fraction=ff.tissue_fraction)
    result = EmbeddingResult(ff.features, grid, str(ff.model), ff.weights)
    smap = build_slide_map(result, k, summary=ff.summary)
    return dataclasses.replace(smap, features_file=path)
