"""Feature cache and live slide map on the real CMU-1-Small-Region slide with a tiny random ViT."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import h5py
import numpy as np
import pytest

from napari_pathdistill.errors import Cancelled
from napari_pathdistill.inference import feature_cache, live_map
from napari_pathdistill.inference.embed import embed_slide
from napari_pathdistill.inference.live_map import PartialMap, iter_live_map
from napari_pathdistill.inference.slide_maps import SlideMap
from napari_pathdistill.models.testing import tiny_model
from napari_pathdistill.progress import Progress

KW = {"mpp": 4.0, "min_tissue": 0.1, "batch_size": 2, "chunk_batches": 1, "k": 2, "fit_rows": 4}


@pytest.fixture
def counted():
    """The tiny ViT whose ``embed`` counts the tiles it is given (the real embedding runs)."""
    model = tiny_model("vit")
    real, model.calls = model.embed, []

    def embed(tiles):
        model.calls.append(len(tiles))
        return real(tiles)

    model.embed = embed
    return model


def _run(model, slide, cache, cancel_after=None, cancel=None, **kw):
    """Drain iter_live_map: (items, the Cancelled raised or None); cancels once ``cancel_after`` tiles are written."""
    cancel, items = cancel or threading.Event(), []
    try:
        for item in iter_live_map(model, slide, cache, cancel=cancel, **{**KW, **kw}):
            items.append(item)
            if cancel_after and isinstance(item, Progress) and item.done >= cancel_after:
                cancel.set()
    except Cancelled as exc:
        return items, exc
    return items, None


def test_cache_dir_resolution(monkeypatch, tmp_path):
    monkeypatch.delenv(feature_cache.CACHE_ENV, raising=False)
    default = feature_cache.default_cache_dir()
    assert default.parts[-2:] == ("napari-pathdistill", "features")
    monkeypatch.setenv(feature_cache.CACHE_ENV, str(tmp_path / "env"))
    assert feature_cache.resolve_cache_dir("") == tmp_path / "env"
    assert feature_cache.resolve_cache_dir(None) == tmp_path / "env"
    assert feature_cache.resolve_cache_dir(tmp_path / "field") == tmp_path / "field"


def test_same_file_name_other_slide_other_cache_file(cmu_svs, tmp_path):
    attrs = {"model": "m", "spec": "{}", "tile_px": 56, "mpp": 4.0, "min_tissue": 0.1}
    other = tmp_path / "elsewhere" / cmu_svs.name
    other.parent.mkdir()
    shutil.copy(cmu_svs, other)
    a = feature_cache.cache_file(tmp_path, cmu_svs, attrs)
    assert a.name.startswith(cmu_svs.stem + "-") and a.suffix == ".h5"
    assert a == feature_cache.cache_file(tmp_path, cmu_svs, dict(attrs))  # stable
    assert a != feature_cache.cache_file(tmp_path, other, attrs)  # same name, another file
    assert a != feature_cache.cache_file(tmp_path, cmu_svs, {**attrs, "min_tissue": 0.2})


def test_live_map_then_cache_hit_skips_the_model(cmu_svs, tmp_path, counted):
    items, _ = _run(counted, cmu_svs, tmp_path)
    final = items[-1]
    assert isinstance(final, SlideMap)
    n = len(final.features)
    assert sum(counted.calls) == n > 4
    partials = [i for i in items if isinstance(i, PartialMap)]
    assert partials and partials[0].done < n  # the map fills in before the end
    last = max(i for i, p in enumerate(partials) if i == 0 or p.refit)  # a refit repaints every tile so far
    assert all(
        p.refit == (len(p.cells) == p.done > partials[i - 1].done) for i, p in enumerate(partials) if i
    )
    shown = np.concatenate([p.cells for p in partials[last:]])
    assert len(shown) == n and len(np.unique(shown, axis=0)) == n  # then every tile coloured exactly once
    rr, cc = np.nonzero(final.index_image)
    assert {tuple(x) for x in shown} == set(zip(rr.tolist(), cc.tolist(), strict=True))
    assert all(((p.rgb >= 0) & (p.rgb <= 1)).all() for p in partials)
    # the cache file is what `pathdistill embed` writes: its writer skips it as complete
    (h5,) = tmp_path.glob("*.h5")
    with h5py.File(h5) as f:
        np.testing.assert_array_equal(f["features"][()], final.features)
    progress = []
    embed_slide(cmu_svs, counted, tmp_path, tile_px=56, mpp=4.0, min_tissue=0.1, progress=progress.append)
    counted.calls.clear()
    again, _ = _run(counted, cmu_svs, tmp_path)
    assert counted.calls == [] and not any(isinstance(i, PartialMap) for i in again)
    np.testing.assert_array_equal(again[-1].features, final.features)
    np.testing.assert_array_equal(again[-1].index_image, final.index_image)
    np.testing.assert_array_equal(again[-1].clusters, final.clusters)
    np.testing.assert_allclose(again[-1].grid.tissue_fraction, final.grid.tissue_fraction, rtol=1e-6)
    assert (final.grid.tissue_fraction >= 0.1).all()  # the cache stores them: no NaN on a cache hit
    h5.unlink()  # the CLI's <stem>.h5 in the same folder serves as the cache too
    assert (
        feature_cache.find_complete(tmp_path, cmu_svs, _attrs(counted, cmu_svs))
        == tmp_path / f"{cmu_svs.stem}.h5"
    )
    again, _ = _run(counted, cmu_svs, tmp_path)
    assert counted.calls == [] and isinstance(again[-1], SlideMap)
    # another min tissue is another embedding: computed again, into another file
    _run(counted, cmu_svs, tmp_path, min_tissue=0.3)
    assert sum(counted.calls) > 0 and len(list(tmp_path.glob("*.h5"))) == 2


def _attrs(model, slide, min_tissue=0.1):
    from napari_pathdistill.inference.feature_writer import slide_attrs
    from napari_pathdistill.wsi import open_pyramid

    with open_pyramid(slide) as pyr:
        return slide_attrs(pyr, model, 56, 4.0, min_tissue)


def test_cancel_keeps_a_partial_that_resumes_to_the_same_features(cmu_svs, tmp_path, counted):
    full, _ = _run(counted, cmu_svs, tmp_path / "full")
    n = len(full[-1].features)
    counted.calls.clear()
    _, cancelled = _run(counted, cmu_svs, tmp_path / "cut", cancel_after=4)
    assert isinstance(cancelled, Cancelled) and "kept" in str(cancelled)
    (partial,) = (tmp_path / "cut").glob("*.h5.partial")
    with h5py.File(partial) as f:
        done = int(f.attrs["done"])
    assert 4 <= done < n and not list((tmp_path / "cut").glob("*.lock"))
    counted.calls.clear()
    resumed, _ = _run(counted, cmu_svs, tmp_path / "cut")
    assert sum(counted.calls) == n - done  # only the missing tiles run through the model
    assert isinstance(resumed[0], Progress)
    first = next(i for i in resumed if isinstance(i, PartialMap))
    assert first.done == done and len(first.cells) == done  # the resumed rows are shown at once
    np.testing.assert_allclose(resumed[-1].features, full[-1].features, rtol=1e-5, atol=1e-6)


def test_another_checkpoint_of_the_same_name_is_never_served_from_the_cache(cmu_svs, tmp_path, counted):
    """A new bundled student keeps its name and architecture: its features must not come from the old one's cache,
    complete or partial (rows of two checkpoints are never mixed)."""
    first, _ = _run(counted, cmu_svs, tmp_path / "cache")
    n = len(first[-1].features)
    _, cancelled = _run(counted, cmu_svs, tmp_path / "cut", cancel_after=4)
    assert isinstance(cancelled, Cancelled)
    retrained = tiny_model("vit", seed=1)  # same name, spec and shape; other weights
    assert retrained.spec == counted.spec and retrained.weights_id != counted.weights_id
    assert retrained.weights_id == tiny_model("vit", seed=1).weights_id  # the same weights: the same id
    real, retrained.calls = retrained.embed, []
    retrained.embed = lambda tiles: (retrained.calls.append(len(tiles)), real(tiles))[1]
    again, _ = _run(retrained, cmu_svs, tmp_path / "cache")
    assert sum(retrained.calls) == n  # all computed again
    assert not np.allclose(again[-1].features, first[-1].features)
    retrained.calls.clear()
    _run(retrained, cmu_svs, tmp_path / "cut")
    assert sum(retrained.calls) == n  # the other weights' partial is restarted, not resumed
    with h5py.File(next((tmp_path / "cut").glob("*.h5"))) as f:
        assert f.attrs["weights"] == retrained.weights_id


def test_um_px_override_of_a_slide_without_mpp_cuts_um_tiles_placed_in_pixels(tcga_svs, tmp_path, counted):
    """The TCGA frozen section states no MPP (napari shows it in level-0 pixels). With a level-0 um/px override
    of 2 its 56 px tiles at 16 um/px are 448 level-0 px, the live and final maps are placed in level-0 px on
    the slide's tiles, the file records the override, and another override is another cache file."""
    kw = {"mpp": 16.0, "min_tissue": 0.5}
    items, _ = _run(counted, tcga_svs, tmp_path, fallback_mpp=2.0, **kw)
    final = items[-1]
    assert isinstance(final, SlideMap) and final.grid.size_level0 == pytest.approx(448)
    assert final.scale == pytest.approx((448, 448))  # one raster cell per tile, in level-0 px
    centres = final.grid.coords[:, ::-1] + (448 - 1) / 2  # (y, x) level-0 centre of each tile
    np.testing.assert_allclose(final.tile_centers(), centres)
    live = [i for i in items if isinstance(i, PartialMap)]
    assert live and all(p.scale == final.scale and p.translate == final.translate for p in live)
    assert live_map.map_placement(tcga_svs, 56, 16.0, 2.0)[1:] == (final.scale, final.translate)
    with h5py.File(final.features_file) as f:
        assert f.attrs["mpp_override"] == 2.0 and f.attrs["mpp"] == 16.0 and "warning" not in f.attrs
    counted.calls.clear()
    _run(counted, tcga_svs, tmp_path, fallback_mpp=2.0, **kw)
    assert counted.calls == []  # the same override: a cache hit
    _run(counted, tcga_svs, tmp_path, fallback_mpp=4.0, **kw)  # 224 px tiles: not served from the 448 px file
    assert sum(counted.calls) > 0 and len(list(tmp_path.glob("*.h5"))) == 2


def test_override_enters_the_cache_key_only_when_given(cmu_svs, tcga_svs, tmp_path):
    """Files cached before the override existed keep their names and still match; with an override, neither a
    file without one nor one with another override matches."""
    from napari_pathdistill.inference.feature_writer import slide_attrs
    from napari_pathdistill.inference.outputs import complete_rows
    from napari_pathdistill.wsi import open_pyramid

    model = tiny_model("vit")
    attrs = {"model": "m", "spec": "{}", "tile_px": 56, "mpp": 4.0, "min_tissue": 0.1}
    before = feature_cache.cache_file(tmp_path, cmu_svs, attrs)
    assert feature_cache.cache_file(tmp_path, cmu_svs, {**attrs, "mpp_override": None}) == before
    assert feature_cache.cache_file(tmp_path, cmu_svs, {**attrs, "mpp_override": 0.5}) != before
    with open_pyramid(cmu_svs, fallback_mpp=0.25) as pyr:  # the file's own MPP wins: no override recorded
        assert "mpp_override" not in slide_attrs(pyr, model, 56, 4.0, 0.1)
    with open_pyramid(tcga_svs, fallback_mpp=0.25) as pyr:
        wanted = slide_attrs(pyr, model, 56, 4.0, 0.1)
    assert wanted["mpp_override"] == 0.25
    out = tmp_path / "f.h5"
    for stored, matches in ((None, False), (0.5, False), (0.25, True)):
        with h5py.File(out, "w") as f:
            f["coords"], f["features"] = np.zeros((3, 2), np.int64), np.zeros((3, 4), np.float32)
            f.attrs.update({k: v for k, v in wanted.items() if k != "mpp_override"})
            f.attrs["done"] = 3
            if stored is not None:
                f.attrs["mpp_override"] = stored
        assert bool(complete_rows(out, wanted)) is matches, stored


def test_a_partial_cut_without_the_override_is_not_resumed_with_it(tmp_path):
    """A no-MPP slide at 0.5 um/px with an override of 0.5 has the same tiles (coords) as without one: a partial
    written without the override starts over (the finished file must say it was cut at the override)."""
    from types import SimpleNamespace

    from napari_pathdistill.inference.feature_writer import open_partial

    model = tiny_model("vit")
    grid = SimpleNamespace(coords=np.array([[0, 0], [56, 0]]), tissue_fraction=np.ones(2, np.float32))
    attrs = {"model": model.spec.name, "weights": model.weights_id, "mpp": float("nan")}
    partial = tmp_path / "s.h5.partial"
    with open_partial(partial, model, grid, attrs) as f:
        f.attrs["done"] = 1
    with open_partial(partial, model, grid, dict(attrs)) as f:
        assert int(f.attrs["done"]) == 1  # the same request resumes
    with open_partial(partial, model, grid, {**attrs, "mpp": 0.5, "mpp_override": 0.5}) as f:
        assert int(f.attrs["done"]) == 0 and f.attrs["mpp_override"] == 0.5


def test_a_model_that_overflows_gives_a_clear_error_and_a_fresh_next_run(cmu_svs, tmp_path, counted):
    """NaN embeddings (e.g. a float16 overflow) used to stop the final map with numpy's "SVD did not converge"
    and left a complete .partial that every later run resumed into the same error."""
    from napari_pathdistill.errors import NonFiniteFeaturesError

    real = counted.embed

    def overflowing(tiles):
        out = real(tiles)
        out[0] = float("nan")
        return out

    counted.embed = overflowing
    with pytest.raises(NonFiniteFeaturesError, match=r"NaN or inf embeddings.*float16.*kept in"):
        _run(counted, cmu_svs, tmp_path)
    assert not list(tmp_path.rglob("*.partial")) and len(list(tmp_path.rglob("*.h5.nonfinite"))) == 1
    counted.embed, counted.calls = real, []
    items, _ = _run(counted, cmu_svs, tmp_path)  # embedded again from the first tile
    assert isinstance(items[-1], SlideMap) and sum(counted.calls) == len(items[-1].features)


def test_a_small_slide_paints_its_live_map_long_before_its_end(cmu_svs, tmp_path, counted):
    """A slide of fewer tiles than FIT_ROWS (256) waited for all of them: its live map only painted at the end,
    and a cancelled run had nothing on screen. Its first live PCA now waits for a quarter of its tiles."""
    assert live_map.first_fit_rows(live_map.FIT_ROWS, 221) == 56  # CMU-1-Small-Region at 0.25 um/px
    assert live_map.first_fit_rows(live_map.FIT_ROWS, 5_000) == live_map.FIT_ROWS  # large slides: as before
    assert live_map.first_fit_rows(live_map.FIT_ROWS, 5) == 5
    items, _ = _run(counted, cmu_svs, tmp_path, fit_rows=live_map.FIT_ROWS)
    n = len(items[-1].features)
    parts = [i for i in items if isinstance(i, PartialMap)]
    assert n < live_map.FIT_ROWS and parts, n
    assert parts[0].done <= max(live_map.MIN_FIT_ROWS, -(-n // live_map.REFIT_GROWTH)) + 2  # 2-tile chunks
    assert parts[-1].done == n and sum(len(p.cells) for p in parts) == n  # every tile painted once


def test_a_cancelled_run_paints_every_tile_it_embedded(cmu_svs, tmp_path, counted):
    """Cancel before the first live PCA: the tiles embedded so far are painted (the PCA fitted on them), so the
    map layer keeps them on screen, as docs/widgets.md says."""
    items, cancelled = _run(counted, cmu_svs, tmp_path, cancel_after=4, fit_rows=live_map.FIT_ROWS)
    assert isinstance(cancelled, Cancelled)
    (partial,) = tmp_path.glob("*.h5.partial")
    with h5py.File(partial) as f:
        done = int(f.attrs["done"])
    parts = [i for i in items if isinstance(i, PartialMap)]
    assert parts and parts[-1].done == done and sum(len(p.cells) for p in parts) == done
    assert np.all((parts[-1].rgb >= 0) & (parts[-1].rgb <= 1))


def test_a_cancelled_run_in_a_cancel_scope_still_paints_every_tile_it_embedded(
    cmu_svs, tmp_path, counted, monkeypatch
):
    """The Embed widget runs this generator in a cancel scope (``_qt._workers._drive``), where the live PCA of a
    large slide (its randomized path, here a checkpoint put before it) raises Cancelled: the paint of the tiles
    embedded before Cancel must still reach the map (it is shielded), as without a scope."""
    from napari_pathdistill.progress import cancel_scope, checkpoint

    real = live_map.pca_axes
    monkeypatch.setattr(live_map, "pca_axes", lambda *a, **kw: (checkpoint(), real(*a, **kw))[1])
    cancel = threading.Event()
    with cancel_scope(cancel, "Cancelled."):
        items, cancelled = _run(counted, cmu_svs, tmp_path, fit_rows=live_map.FIT_ROWS, cancel=cancel,
                                cancel_after=4)  # fmt: skip
    assert isinstance(cancelled, Cancelled) and "Embedding cancelled" in str(cancelled)
    (partial,) = tmp_path.glob("*.h5.partial")
    with h5py.File(partial) as f:
        done = int(f.attrs["done"])
    parts = [i for i in items if isinstance(i, PartialMap)]
    assert parts and parts[-1].done == done and sum(len(p.cells) for p in parts) == done


@pytest.mark.parametrize("bad", ["under_a_file", "proc"])
def test_a_cache_folder_that_cannot_be_made_is_one_clear_line(cmu_svs, tmp_path, counted, bad):
    """A cache folder under a regular file, or in /proc, failed 2 s in with a raw NotADirectoryError /
    FileNotFoundError of h5py's mkdir: it is a CacheDirError (a PathDistillError) naming the folder."""
    from napari_pathdistill.errors import PathDistillError

    (tmp_path / "afile").write_text("x")
    folder = tmp_path / "afile" / "sub" if bad == "under_a_file" else Path("/proc/pathdistill_cache")
    with pytest.raises(feature_cache.CacheDirError, match="cannot be created") as err:
        feature_cache.ensure_cache_dir(folder)
    assert isinstance(err.value, PathDistillError) and str(folder) in str(err.value)
    assert "choose another 'feature cache' folder" in str(err.value)
    with pytest.raises(feature_cache.CacheDirError, match=str(folder)):
        _run(counted, cmu_svs, folder)
    assert feature_cache.ensure_cache_dir(tmp_path / "new" / "cache") == tmp_path / "new" / "cache"
    assert (tmp_path / "new" / "cache").is_dir()


def test_cancelled_during_the_final_pca_the_next_run_only_refits(cmu_svs, tmp_path, counted, monkeypatch):
    """The widget's Cancel reaches the final PCA / k-means of a large slide inside them (its cancel scope): every
    row is then in the .partial file, so the next run embeds no tile again and ends with the same map."""
    from napari_pathdistill.progress import cancel_scope, checkpoint

    full, _ = _run(counted, cmu_svs, tmp_path / "full")
    real = live_map.summarise_partial
    monkeypatch.setattr(live_map, "summarise_partial", lambda *a, **kw: (checkpoint(), real(*a, **kw))[1])
    cancel, items = threading.Event(), []
    with cancel_scope(cancel, "Cancelled."), pytest.raises(Cancelled):
        for item in iter_live_map(counted, cmu_svs, tmp_path / "cut", cancel=cancel, **KW):
            items.append(item)
            if isinstance(item, Progress) and item.stage == "PCA and k-means":
                cancel.set()  # pressed while the refit runs
    (partial,) = (tmp_path / "cut").glob("*.h5.partial")
    with h5py.File(partial) as f:
        assert int(f.attrs["done"]) == len(full[-1].features)
    counted.calls.clear()
    again, _ = _run(counted, cmu_svs, tmp_path / "cut")
    assert sum(counted.calls) == 0 and not list((tmp_path / "cut").glob("*.partial"))
    np.testing.assert_allclose(again[-1].features, full[-1].features, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(again[-1].clusters, full[-1].clusters)
