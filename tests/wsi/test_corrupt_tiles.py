"""Slides with a few tiles that cannot be decoded: the viewer shows them flat grey with one warning per tile (the
first 5 tiles of a slide; then one note for the rest),
``pathdistill embed`` leaves them out, says so, lists them in the HDF5 and still resumes.

Both backends: a tifffile-written JPEG pyramid (tifffile) and a copy of CMU-1-Small-Region.svs (OpenSlide,
whose handle is unusable after an error until it is reopened), with JPEG headers of a few tiles zeroed.
"""

from __future__ import annotations

import re
import shutil
import threading
import warnings
from pathlib import Path

import h5py
import numpy as np
import pytest
import tifffile

from _wsi_files import corrupt_svs_copy, corrupt_tiles
from napari_pathdistill.cli.main import main
from napari_pathdistill.errors import CorruptTileError, CorruptTileWarning
from napari_pathdistill.inference.embed import embed_slide
from napari_pathdistill.inference.outputs import MATCH_ATTRS, complete_rows
from napari_pathdistill.models.checkpoint import save_checkpoint
from napari_pathdistill.models.testing import tiny_model
from napari_pathdistill.wsi import open_pyramid

TILE = 128
BAD = (3, 40)  # level-0 tile indices (8 tiles across): row 0 col 3, row 5 col 0
GREY = 128


def _smooth_rgb(side: int) -> np.ndarray:
    yy, xx = np.mgrid[:side, :side] / side
    img = np.stack([200 - 80 * xx, 120 + 60 * np.sin(6 * yy), 170 - 50 * xx * yy], axis=-1)
    return np.clip(img, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def jpeg_pyramid(tmp_path_factory) -> tuple[Path, Path]:
    """(intact, corrupt) 1024 px JPEG OME pyramids of 128 px tiles, 2 levels, 0.5 um/px."""
    folder = tmp_path_factory.mktemp("jpeg")
    good = folder / "good.ome.tif"
    img = _smooth_rgb(1024)
    kw = {"tile": (TILE, TILE), "compression": "jpeg", "photometric": "rgb"}
    with tifffile.TiffWriter(good, ome=True) as tw:
        tw.write(img, subifds=1, metadata={"PhysicalSizeX": 0.5, "PhysicalSizeY": 0.5}, **kw)
        tw.write(img[::2, ::2].copy(), subfiletype=1, metadata=None, **kw)
    bad = folder / "bad.ome.tif"
    shutil.copy(good, bad)
    with tifffile.TiffFile(bad) as tif:
        offsets = tif.series[0].levels[0].keyframe.dataoffsets
    corrupt_tiles(bad, offsets, BAD)
    return good, bad


@pytest.fixture(scope="module")
def corrupt_svs(tmp_path_factory, cmu_svs: Path) -> Path:
    """CMU-1-Small-Region.svs (240 px JPEG tiles, 10 across) with tiles 3 and 40 corrupt."""
    return corrupt_svs_copy(cmu_svs, tmp_path_factory.mktemp("svs") / "cmu-bad.svs", BAD)


def _compute(pyr, level: int = 0) -> tuple[np.ndarray, list[warnings.WarningMessage]]:
    with warnings.catch_warnings(record=True) as got:
        warnings.simplefilter("always")
        arr = np.asarray(pyr.to_dask()[level].compute())
    return arr, [w for w in got if issubclass(w.category, CorruptTileWarning)]


def _check_viewer(good: Path, bad: Path, tile: int, across: int) -> None:
    with open_pyramid(good) as g:
        want = g.read_region((0, 0), 0, g.dimensions)
    with open_pyramid(bad) as pyr:
        got, warned = _compute(pyr)
        assert len(warned) == len(BAD), [str(w.message) for w in warned]
        mask = np.zeros(got.shape[:2], bool)
        for i in BAD:
            r, c = divmod(i, across)
            mask[r * tile : (r + 1) * tile, c * tile : (c + 1) * tile] = True
        assert (got[mask] == GREY).all()
        np.testing.assert_array_equal(got[~mask], want[~mask])
        messages = sorted(str(w.message) for w in warned)
        assert all(bad.name in m and "cannot be decoded" in m and "flat grey tile" in m for m in messages)
        named = {re.search(r"level 0, tile row \d+ column \d+", m).group(0) for m in messages}  # type: ignore[union-attr]
        assert named == {f"level 0, tile row {i // across} column {i % across}" for i in BAD}
        pyr._cache.max_bytes = 0  # a redraw without the cache reads the tiles again: still no new warning
        pyr._cache._data.clear()
        again, warned = _compute(pyr)
        assert warned == [] and np.array_equal(again, got)


def test_tifffile_corrupt_tiles_are_grey_in_the_viewer_with_one_warning_each(jpeg_pyramid) -> None:
    good, bad = jpeg_pyramid
    with open_pyramid(bad) as pyr:
        assert pyr.backend == "tifffile" and len(pyr.levels) == 2
        with pytest.raises(CorruptTileError, match=r"bad\.ome\.tif: level 0 tile 3 cannot be decoded"):
            pyr.read_region((3 * TILE, 0), 0, (16, 16))
    _check_viewer(good, bad, TILE, 8)


def test_a_slide_with_many_undecodable_tiles_names_five_then_says_so_once(tmp_path: Path, os2_pair) -> None:
    """The real OS-2 NDPI scan cut in half (a copy that stopped): 14 of its 25 tiles lie past the end. Each gave
    its own warning, a notification each in napari (65 for a truncated DICOM of CMU-1-Small-Region at full zoom;
    one per tile panned over on a large slide). Now the first 5 are named, one note says that more are grey, and
    the rest are grey without a word; a redraw warns no more."""
    from napari_pathdistill.errors import TruncatedFileWarning
    from napari_pathdistill.wsi._dask_levels import MAX_TILE_WARNINGS

    data = os2_pair[0].read_bytes()
    cut = tmp_path / "cut.ome.tif"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.warns(TruncatedFileWarning, match="lost the last tiles of level 0"), open_pyramid(cut) as pyr:
        got, warned = _compute(pyr)
        th, tw = pyr.levels[0].tile_shape
        grey = [(got[y : y + th, x : x + tw] == GREY).all() for y in range(0, got.shape[0], th)
                for x in range(0, got.shape[1], tw)]  # fmt: skip
        assert sum(grey) > MAX_TILE_WARNINGS + 3, sum(grey)  # many more grey tiles than warnings
        messages = [str(w.message) for w in warned]
        assert len(messages) == MAX_TILE_WARNINGS + 1, messages
        assert all("Shown as a flat grey tile: level 0, tile row" in m for m in messages[:-1])
        assert f"More than {MAX_TILE_WARNINGS} tiles of this slide cannot be decoded" in messages[-1]
        pyr._cache.max_bytes = 0  # a redraw without the cache reads the tiles again: still no new warning
        pyr._cache._data.clear()
        again, warned = _compute(pyr)
        assert warned == [] and np.array_equal(again, got)


def test_openslide_corrupt_tiles_are_grey_and_the_handle_keeps_working(
    cmu_svs: Path, corrupt_svs: Path
) -> None:
    with open_pyramid(corrupt_svs) as pyr:
        assert pyr.backend == "openslide"
        with pytest.raises(CorruptTileError, match=r"cmu-bad\.svs: the region at level-0 \(720, 0\)"):
            pyr.read_region((720, 0), 0, (240, 240))
        with open_pyramid(cmu_svs) as g:  # the next read of an intact tile works (the handle was reopened)
            np.testing.assert_array_equal(
                pyr.read_region((0, 0), 0, (240, 240)), g.read_region((0, 0), 0, (240, 240))
            )
    _check_viewer(cmu_svs, corrupt_svs, 240, 10)


def test_thumbnail_of_a_corrupt_slide_warns_once(corrupt_svs: Path) -> None:
    with (
        open_pyramid(corrupt_svs) as pyr,
        pytest.warns(CorruptTileWarning, match="2 tiles of level 0") as rec,
    ):
        thumb, _ = pyr.thumbnail(512)
    assert thumb.shape == (512, 383, 3) and len([w for w in rec if w.category is CorruptTileWarning]) == 1


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    model = tiny_model("vit")
    return save_checkpoint(model.module, model.spec, tmp_path_factory.mktemp("ckpt"))


def _grid_kw() -> dict:
    """56 px tiles of 64 level-0 px (0.5 um/px slide): a 16 x 16 grid, 4 grid tiles per 128 px native tile."""
    return {"mpp": 0.5 * 64 / 56, "min_tissue": 0.0, "batch_size": 16}


def test_embed_skips_corrupt_tiles_and_lists_them(jpeg_pyramid, tmp_path: Path) -> None:
    good, bad = jpeg_pyramid
    model = tiny_model("vit")
    ref = embed_slide(good, model, tmp_path / "good", **_grid_kw())
    with pytest.warns(CorruptTileWarning, match="skipped 8 unreadable tiles"):
        out = embed_slide(bad, model, tmp_path / "bad", **_grid_kw())
    with h5py.File(ref) as f:
        all_coords, all_feats = f["coords"][()], f["features"][()]
        assert f.attrs["skipped_tiles"] == 0 and f["skipped_coords"].shape == (0, 2)
    with h5py.File(out) as f:
        coords, feats, skipped = f["coords"][()], f["features"][()], f["skipped_coords"][()]
        assert f.attrs["skipped_tiles"] == 8 and f.attrs["done"] == 248 == len(coords) == len(feats)
        assert (
            f["coords"].attrs["patch_size_level0"] == f.attrs["patch_size_level0"]
        )  # TRIDENT's, kept in the copy
    want_bad = {((i % 8) * TILE + dx, (i // 8) * TILE + dy) for i in BAD for dx in (0, 64) for dy in (0, 64)}
    assert {tuple(c) for c in skipped} == want_bad
    keep = np.array([tuple(c) not in want_bad for c in all_coords])
    np.testing.assert_array_equal(coords, all_coords[keep])
    np.testing.assert_allclose(feats, all_feats[keep], atol=1e-5)
    assert not np.isnan(feats).any() and not out.with_suffix(".h5.partial").exists()


def test_embed_with_corrupt_tiles_resumes_and_counts_as_complete(jpeg_pyramid, tmp_path: Path) -> None:
    _, bad = jpeg_pyramid
    model, cancel = tiny_model("vit"), threading.Event()
    partial = embed_slide(bad, model, tmp_path, **_grid_kw(), chunk_batches=1, num_workers=1, prefetch=1,
                          cancel=cancel, progress=lambda p: cancel.set() if p.done >= 48 else None)  # fmt: skip
    assert partial.suffix == ".partial"
    with h5py.File(partial) as f:  # rows 0..47 hold the 4 grid tiles of native tile 3 (rows 6, 7, 22, 23)
        assert 48 <= f.attrs["done"] < 256 and sorted(f["skipped_rows"][()]) == [6, 7, 22, 23]
    with pytest.warns(CorruptTileWarning, match="skipped 8"):
        out = embed_slide(bad, model, tmp_path, **_grid_kw())
    with h5py.File(out) as f:
        assert f.attrs["skipped_tiles"] == 8 and len(f["coords"]) == 248
        attrs = {k: f.attrs[k] for k in MATCH_ATTRS}
    assert complete_rows(out, attrs) == 248


def test_embed_cli_exits_0_and_says_how_many_tiles_it_skipped(corrupt_svs: Path, ckpt: Path, tmp_path: Path,
                                                               capsys) -> None:  # fmt: skip
    args = ["embed", str(corrupt_svs), "--model", str(ckpt), "--out", str(tmp_path), "--mpp", "4.284",
            "--min-tissue", "0", "--device", "cpu"]  # fmt: skip
    assert main(args) == 0
    err = capsys.readouterr().err
    assert f"WARNING {corrupt_svs}: skipped 3 unreadable tiles" in err and "skipped_coords" in err
    with h5py.File(tmp_path / "cmu-bad.h5") as f:  # 481 px grid tiles: tile 3 is in one, tile 40 in two
        assert f.attrs["skipped_tiles"] == 3 and len(f["coords"]) == 21
        assert sorted(map(tuple, f["skipped_coords"][()])) == [(0, 481), (0, 962), (481, 0)]
    assert main(args) == 0  # a rerun keeps the complete output, and says again what it lacks
    err = capsys.readouterr().err
    assert "complete output kept" in err and "skipped 3 unreadable tiles" in err
