"""Similarity heatmaps: the raster holds, at each tile's cell, its cosine to the query tile; cross-slide rules."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from napari_pathdistill.inference.similarity_map import SimilarityMapError, cosines, heatmap, row_norms
from napari_pathdistill.inference.slide_maps import iter_slide_map
from napari_pathdistill.models.testing import tiny_model
from napari_pathdistill.progress import drain


@pytest.fixture(scope="module")
def cmu_map(shared_data):
    model = tiny_model("vit")
    return drain(iter_slide_map(model, shared_data / "wsi" / "CMU-1-Small-Region.svs", mpp=1.0, min_tissue=0.1,
                                k=3))  # fmt: skip


def test_heatmap_cells_hold_the_cosine_of_their_tile(cmu_map):
    n = len(cmu_map.features)
    assert n > 10
    q = n // 2
    hm = heatmap(cmu_map, q)
    f = cmu_map.features.astype(np.float64)
    direct = f @ f[q] / (np.linalg.norm(f, axis=1) * np.linalg.norm(f[q]))
    np.testing.assert_allclose(hm.cosine, direct, atol=1e-5)
    assert hm.cosine[q] == pytest.approx(1.0, abs=1e-5)
    rr, cc = np.nonzero(cmu_map.index_image)
    tiles = cmu_map.index_image[rr, cc] - 1
    np.testing.assert_allclose(hm.image[rr, cc], direct[tiles], atol=1e-5)
    off = cmu_map.index_image == 0
    assert off.any() and np.all(np.isnan(hm.image[off])) and np.isnan(hm.off_value)  # no cosine, not -2
    above = hm.above(0.5)
    assert above[0] == q and np.all(np.diff(hm.cosine[above]) <= 0) and np.all(hm.cosine[above] >= 0.5)
    assert set(above) == set(np.flatnonzero(direct >= 0.5))
    assert row_norms(cmu_map) is row_norms(cmu_map) and row_norms(cmu_map).shape == (n,)  # (N,), once per map
    assert cosines(cmu_map, q) is hm.cosine  # the click's top-k reuses the heatmap's product
    assert cosines(cmu_map, q + 1) is not hm.cosine and not hm.cosine.flags.writeable


def test_cross_slide_query_uses_the_target_grid(cmu_map, shared_data):
    other = drain(iter_slide_map(tiny_model("vit"), shared_data / "wsi" / "tcga-cr-7395-01a-01-ts1.svs",
                                 mpp=1.0, min_tissue=0.1, k=3))  # fmt: skip
    hm = heatmap(cmu_map, 0, other)
    assert hm.image.shape == other.index_image.shape and len(hm.cosine) == len(other.features)
    g = other.features.astype(np.float64)
    q = cmu_map.features[0].astype(np.float64)
    np.testing.assert_allclose(hm.cosine, g @ q / (np.linalg.norm(g, axis=1) * np.linalg.norm(q)), atol=1e-5)


def test_maps_of_different_models_or_tiles_out_of_range_are_refused(cmu_map):
    renamed = dataclasses.replace(cmu_map, model_name="another model")
    with pytest.raises(SimilarityMapError, match="different models"):
        heatmap(cmu_map, 0, renamed)
    narrow = dataclasses.replace(cmu_map, features=cmu_map.features[:, :8])
    with pytest.raises(SimilarityMapError, match="8-d"):
        heatmap(cmu_map, 0, narrow)
    with pytest.raises(SimilarityMapError, match="out of range"):
        heatmap(cmu_map, len(cmu_map.features))


def test_prepared_maps_need_no_work_on_the_first_click(cmu_map):
    from napari_pathdistill.inference import similarity_map as sm

    fresh = dataclasses.replace(cmu_map)  # a new map object: nothing cached for it yet
    fresh.features = np.asfortranarray(fresh.features.astype(np.float64))
    assert id(fresh) not in sm._NORMS
    assert sm.prepared(fresh) is fresh and id(fresh) in sm._NORMS and id(fresh) in sm._CELLS
    assert fresh.features.dtype == np.float32 and fresh.features.flags.c_contiguous


def test_most_similar_equals_a_full_stable_sort_of_the_cosines(cmu_map):
    from napari_pathdistill.inference.similarity_map import most_similar
    from napari_pathdistill.metrics.features import cosine_to

    for index in (0, len(cmu_map.features) // 2, len(cmu_map.features) - 1):
        ref = cosine_to(cmu_map.features, index)
        order = [i for i in np.argsort(-ref, kind="stable") if i != index]
        for k in (1, 5, len(cmu_map.features) - 1):
            idx, cos = most_similar(cmu_map, index, k)
            ref_idx, ref_cos = np.asarray(order[:k], np.int64), ref[order[:k]]
            np.testing.assert_array_equal(idx, ref_idx)
            np.testing.assert_allclose(cos, ref_cos, rtol=1e-5, atol=1e-6)
            assert index not in idx and len(idx) == k


def test_cells_without_a_tile_hold_no_cosine_and_the_tiles_all_do(cmu_map):
    """Hovering the heatmap off the tiles showed -2, an internal sentinel: those cells are NaN (napari draws NaN
    transparent), every tile's cell a finite cosine in [-1, 1]."""
    hm = heatmap(cmu_map, 0)
    tiles = cmu_map.index_image > 0
    assert np.array_equal(np.isfinite(hm.image), tiles)
    assert np.all(np.abs(hm.image[tiles]) <= 1 + 1e-5) and not np.any(hm.image == -2)


def test_hover_table_holds_integers_for_tile_position_and_cluster(shared_data):
    """The TCGA frozen section (no MPP: level-0 px) has tiles at x = 3136: napari's status bar printed the float64
    column as "x: 3.14e+03". tile, x, y and cluster hold exact integers (row 0, the glass, left blank: NaN, which
    napari skips), without a Python int object per row: object columns cost ~36 bytes a row each (~180 a tile
    for the table, 10 MB kept by a 100k-tile clusters layer), their categorical codes 1-4 bytes."""
    from napari.utils.status_messages import format_feature_value

    model = tiny_model("vit")
    smap = drain(iter_slide_map(model, shared_data / "wsi" / "tcga-cr-7395-01a-01-ts1.svs", mpp=None,
                                tile_px=56, min_tissue=0.5, k=2, max_tiles=40))  # fmt: skip
    table = pd.DataFrame(smap.feature_table())
    per_tile = table.memory_usage(deep=True, index=False).sum() / len(smap.clusters)
    assert per_tile < 100, f"{per_tile:.0f} bytes a tile"  # index 8 + 4 x float64 32 + the integer columns
    for name, values in (("tile", np.arange(len(smap.clusters))), ("x", smap.grid.coords[:, 0]),
                         ("y", smap.grid.coords[:, 1]), ("cluster", smap.clusters)):  # fmt: skip
        column = table[name]
        assert isinstance(column[0], float) and np.isnan(column[0]), name  # napari skips a float NaN
        assert all(isinstance(v, (int, np.integer)) for v in column[1:]), name
        assert list(column[1:]) == [int(v) for v in values], name
        assert [format_feature_value(v) for v in column[1:]] == [str(int(v)) for v in values], name
    assert any(v >= 1000 for v in table["x"][1:])  # a position napari would round to 3 digits as a float


def test_two_checkpoints_of_one_name_are_refused(cmu_map, shared_data, tmp_path):
    """Two training runs both export ``pathdistill-student`` (the config's default name) of one architecture: the
    name and width match, but the feature spaces do not. Slide B embedded by the other run used to be searched
    silently (a heatmap of meaningless cosines); now the weights (``EmbeddingModel.weights_id``, a feature
    file's ``weights`` attr) must match too, for the Embed widget's maps and for feature files."""
    from napari_pathdistill.inference.embed import embed_slide
    from napari_pathdistill.inference.feature_files import read_feature_file, slide_map_from_features

    other_run = tiny_model("vit", seed=1)  # same name "tiny-vit", 48-d: another initialisation
    assert other_run.spec.name == "tiny-vit" and other_run.dim == cmu_map.features.shape[1]
    b = drain(iter_slide_map(other_run, shared_data / "wsi" / "CMU-1-Small-Region.svs", mpp=1.0, min_tissue=0.1,
                             k=3))  # fmt: skip
    with pytest.raises(SimilarityMapError, match="different weights"):
        heatmap(cmu_map, 0, b)
    files = []
    for seed in (0, 1):
        model = tiny_model("vit", seed=seed)
        model.spec = dataclasses.replace(model.spec, mpp=2.0)  # 112 um tiles: a few dozen
        out = embed_slide(
            shared_data / "wsi" / "CMU-1-Small-Region.svs", model, tmp_path / str(seed), num_workers=0
        )
        files.append(slide_map_from_features(read_feature_file(out), k=3))
    with pytest.raises(SimilarityMapError, match=r"weights [0-9a-f]{16} vs [0-9a-f]{16}"):
        heatmap(files[0], 0, files[1])
    assert heatmap(files[0], 0, cmu_map).cosine.shape == (len(cmu_map.features),)  # one checkpoint: compared


def test_a_trident_file_of_no_stated_model_is_refused_for_that_reason(cmu_map, tmp_path):
    """The map's own features written in TRIDENT's layout (which names no model): refused, but not as 'different
    models: tiny-vit vs trident' (they are the same model's here): the file does not say which model it holds."""
    import h5py

    from napari_pathdistill.inference.feature_files import read_feature_file, slide_map_from_features

    grid = cmu_map.grid
    path = tmp_path / "CMU-1-Small-Region.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("features", data=cmu_map.features)
        c = f.create_dataset("coords", data=np.asarray(grid.coords, np.int64))
        c.attrs.update({"patch_size": round(grid.size_level0), "level0_magnification": 20,
                        "patch_size_level0": round(grid.size_level0)})  # fmt: skip
    trident = slide_map_from_features(read_feature_file(path), k=3, slide_mpp=0.499)
    assert trident.model_name == "trident"
    with pytest.raises(SimilarityMapError) as err:
        heatmap(cmu_map, 0, trident)
    msg = str(err.value)
    assert (
        "TRIDENT files do not say which model" in msg and "tiny-vit" in msg and "different models" not in msg
    )
    both = heatmap(trident, 0, dataclasses.replace(trident))  # two TRIDENT files of one width: compared
    assert both.cosine[0] == pytest.approx(1.0, abs=1e-5)
