"""The stored map summary (PCA scores, k-means labels) of our feature files: written by `pathdistill embed` and the
live map, reused on re-open (no refit), ignored when it does not fit the rows, kept when undecodable rows drop."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from napari_pathdistill.inference import map_summary
from napari_pathdistill.inference.embed import embed_slide
from napari_pathdistill.inference.feature_files import read_feature_file, slide_map_from_features
from napari_pathdistill.inference.live_map import iter_live_map
from napari_pathdistill.inference.outputs import finish_output
from napari_pathdistill.metrics.features import kmeans_labels, principal_components
from napari_pathdistill.models.testing import tiny_model
from napari_pathdistill.progress import drain

KW = {"tile_px": 56, "mpp": 4.0, "min_tissue": 0.1, "batch_size": 4}


@pytest.fixture(scope="module")
def embedded(cmu_svs, tmp_path_factory):
    """`pathdistill embed`'s file of the tiny ViT on CMU-1-Small-Region (k = 6 stored)."""
    return embed_slide(cmu_svs, tiny_model("vit"), tmp_path_factory.mktemp("emb"), **KW)


def _no_refit(monkeypatch):
    """Make any PCA / k-means fit fail: a map built now must come from the stored summary."""

    def boom(*_a, **_k):
        raise AssertionError("refitted although a summary is stored")

    monkeypatch.setattr(map_summary, "summarise", boom)


def test_embed_stores_the_pca_and_kmeans_of_its_rows(embedded):
    with h5py.File(embedded) as f:
        feats = f["features"][()]
        stored = map_summary.read_summary(f, len(feats))
    assert stored is not None and stored.k == 6 and stored.pcs.shape == (len(feats), 3)
    np.testing.assert_array_equal(stored.clusters, kmeans_labels(feats, 6))
    np.testing.assert_allclose(
        np.abs(stored.pcs), np.abs(principal_components(feats, 3)), rtol=1e-4, atol=1e-4
    )


def test_reader_and_cache_hit_reuse_the_summary(embedded, cmu_svs, monkeypatch):
    ff = read_feature_file(embedded)
    assert ff.summary is not None
    _no_refit(monkeypatch)
    smap = slide_map_from_features(ff, k=6)
    np.testing.assert_array_equal(smap.clusters, ff.summary.clusters)
    np.testing.assert_array_equal(smap.pcs, ff.summary.pcs)
    # the Embed widget's cache hit (the CLI's <stem>.h5 in the cache folder): no model, no refit
    final = drain(iter_live_map(tiny_model("vit"), cmu_svs, embedded.parent, k=6, **KW))
    np.testing.assert_array_equal(final.clusters, ff.summary.clusters)


def test_another_k_reruns_only_kmeans(embedded, monkeypatch):
    ff = read_feature_file(embedded)
    # must not be called
    monkeypatch.setattr("napari_pathdistill.metrics.features.principal_components", None)
    smap = slide_map_from_features(ff, k=3)
    assert smap.clusters.max() == 3
    np.testing.assert_array_equal(smap.pcs, ff.summary.pcs)


def test_a_summary_of_other_rows_or_version_is_ignored(tmp_path):
    path = tmp_path / "f.h5"
    s = map_summary.MapSummary(np.zeros((5, 3), np.float32), np.ones(5, np.int32), 2)
    with h5py.File(path, "w") as f:
        map_summary.write_summary(f, s)
        assert map_summary.read_summary(f, 5) is not None
        assert map_summary.read_summary(f, 6) is None
        f["map"].attrs["version"] = 99
        assert map_summary.read_summary(f, 5) is None
        del f["map"]
        assert map_summary.read_summary(f, 5) is None


def test_live_map_stores_it_and_dropped_rows_keep_it(tmp_path):
    n, dim = 12, 8
    feats = np.random.default_rng(0).standard_normal((n, dim)).astype(np.float32)
    partial, out = tmp_path / "s.h5.partial", tmp_path / "s.h5"
    with h5py.File(partial, "w") as f:
        f["features"], f["coords"] = feats, np.stack([np.arange(n) * 10, np.zeros(n)], 1).astype(np.int64)
        f["skipped_rows"] = np.array([3, 7])
        f.attrs["done"] = n
    stored = map_summary.summarise_partial(partial, k=2, features=feats)
    assert stored is not None and len(stored.clusters) == n - 2
    assert finish_output(partial, out) == 2
    with h5py.File(out) as f:
        again = map_summary.read_summary(f, len(f["coords"]))
    assert again is not None
    np.testing.assert_array_equal(again.clusters, kmeans_labels(np.delete(feats, [3, 7], 0), 2))


@pytest.mark.parametrize("seed", range(8))
def test_the_final_map_keeps_the_live_colours_orientation(seed: int) -> None:
    """The live map's PCA (first tiles) and the refit at the end (all tiles) may get opposite SVD signs; the
    refit is oriented along the live axes, so no colour channel inverts when the final map replaces the live one."""
    from napari_pathdistill.inference.live_map import LiveColours
    from napari_pathdistill.inference.map_summary import summarise
    from napari_pathdistill.metrics.features import scores_rgb
    from napari_pathdistill.wsi.tiling import TileGrid

    rng = np.random.default_rng(seed)
    n, d = 900, 48
    axes = np.linalg.qr(rng.standard_normal((d, d)))[0][:3]  # three dominant directions, then noise
    feats = rng.standard_normal((n, 3)) * [6.0, 4.0, 2.5] @ axes + 0.3 * rng.standard_normal((n, d)) + 1.0
    feats = feats.astype(np.float32)
    side = 30
    coords = np.stack(np.divmod(np.arange(n), side)[::-1], 1).astype(np.int64) * 224
    grid = TileGrid(coords, 224, 0.5, 224.0, 0, np.ones(n), (side * 224, side * 224))
    colours = LiveColours(grid, feats, fit_rows=60)
    live = colours.update(n)
    final = scores_rgb(summarise(feats, 3, reference_axes=colours.axes).pcs)
    for j in range(
        3
    ):  # agree up to the live map's clipping to its first tiles' range; an inversion is ~ -0.9
        assert np.corrcoef(live.rgb[:, j], final[:, j])[0, 1] > 0.5


def test_live_colours_are_refitted_as_the_tiles_grow() -> None:
    """Tiles come in row-major order: a slide whose top band is one tissue gets its first live PCA from that band
    alone. Each 4-fold growth refits it on rows spread over every embedded tile and repaints them all, with
    each axis pointing as before; the last live colours agree with the final map better than the first."""
    from napari_pathdistill.inference import live_map
    from napari_pathdistill.inference.live_map import LiveColours
    from napari_pathdistill.inference.map_summary import summarise
    from napari_pathdistill.metrics.features import scores_rgb
    from napari_pathdistill.wsi.tiling import TileGrid

    rng = np.random.default_rng(0)
    n, d, side = 1_600, 32, 40
    centres = rng.standard_normal((4, d)) * 4
    kind = np.r_[np.zeros(200, np.int64), rng.integers(0, 4, n - 200)]  # the top band: one tissue only
    feats = (centres[kind] + rng.standard_normal((n, d))).astype(np.float32)
    coords = np.stack(np.divmod(np.arange(n), side)[::-1], 1).astype(np.int64) * 224
    grid = TileGrid(coords, 224, 0.5, 224.0, 0, np.ones(n), (side * 224, side * 224))
    colours = LiveColours(grid, feats, fit_rows=100)
    parts = [colours.update(100)]
    early, early_axes = colours._colours(0, n), colours.axes  # every tile, in the top band's colours
    parts += [colours.update(done) for done in range(200, n + 1, 100)]
    assert [p.done for p in parts if p.refit] == [400]  # 100 -> 400; at 1,600 (the end) the final map refits
    refit = next(p for p in parts if p.refit)
    np.testing.assert_array_equal(refit.cells, colours.cells[: refit.done])  # every tile so far repainted
    assert all(len(p.cells) == 100 for p in parts if not p.refit)  # otherwise only the new tiles
    assert np.all(np.einsum("ij,ij->i", colours.axes, early_axes) >= 0)  # no axis turned round
    final = scores_rgb(summarise(feats, 4, reference_axes=colours.axes).pcs)

    def agreement(rgb: np.ndarray) -> float:
        return float(np.mean([np.corrcoef(rgb[:, j], final[:, j])[0, 1] for j in range(3)]))

    assert agreement(colours._colours(0, n)) > agreement(early) + 0.2
    assert live_map.REFIT_GROWTH == 4
