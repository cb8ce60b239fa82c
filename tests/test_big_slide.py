"""The generated big slide (benchmarks/_big_slide.py, the ``big_slide`` session fixture) through the real
pipeline: our reader, tissue detection and ``embed_slide``. The fixture is 6,000 x 4,500 px (the benchmark's
is 40,000 x 30,000); its tissue islands are known, so detection and embedding are checked against them."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from _big_slide_files import BIG_SLIDE_SHAPE, big_slide_module
from napari_pathdistill._reader import get_reader
from napari_pathdistill.inference.embed import embed_slide
from napari_pathdistill.models.testing import tiny_model
from napari_pathdistill.wsi import open_pyramid
from napari_pathdistill.wsi.tissue import detect_tissue

TILE = 256  # benchmarks/_big_slide.TILE
_inside = big_slide_module().in_islands


def test_reader_opens_the_big_slide_as_a_um_pyramid(big_slide: tuple[Path, np.ndarray]) -> None:
    path, _ = big_slide
    reader = get_reader(str(path))
    assert reader is not None
    [(levels, kwargs, kind)] = reader(str(path))
    assert kind == "image" and kwargs["multiscale"] and kwargs["rgb"]
    assert kwargs["scale"] == (0.25, 0.25) and kwargs["units"] == ("um", "um")
    h, w = BIG_SLIDE_SHAPE
    assert levels[0].shape == (h, w, 3)
    assert max(levels[-1].shape[:2]) <= 2048 < max(levels[-2].shape[:2])
    meta = kwargs["metadata"]["pathdistill"]["levels"]
    for k, ((lh, lw), ds) in enumerate(meta):
        assert (lh, lw) == (h >> k, w >> k)
        assert isinstance(ds, float) and abs(ds - w / lw) < 1e-9  # true float downsample of the level
    assert levels[0].chunksize[:2] == (TILE, TILE)  # one dask chunk per native tile
    assert levels[0].numblocks[:2] == (-(-h // TILE), -(-w // TILE))
    patch = np.asarray(levels[0][:TILE, :TILE])  # top-left corner is glass: bright, low-saturation
    assert patch.min() > 200


def test_tissue_detection_finds_the_islands_not_the_glass(big_slide: tuple[Path, np.ndarray]) -> None:
    path, islands = big_slide
    with open_pyramid(path) as pyr:
        mask = detect_tissue(pyr)
    yy, xx = np.nonzero(np.ones_like(mask.mask))
    y0, x0 = (yy + 0.5) * mask.downsample, (xx + 0.5) * mask.downsample
    core = _inside(x0, y0, islands, margin=-0.1 * islands[:, 2:4].min())  # well inside the islands
    glass = ~_inside(x0, y0, islands, margin=0.05 * islands[:, 2:4].max())  # well between them
    found = mask.mask.ravel()
    assert found[core].mean() > 0.8, "most of the pasted tissue is detected"
    assert found[glass].mean() < 0.02, "the glass between the pieces is not tissue"
    for cy, cx, *_ in islands:  # every piece is found
        assert mask.mask[int(cy / mask.downsample), int(cx / mask.downsample)]


def test_embed_slide_keeps_tiles_inside_the_islands(
    big_slide: tuple[Path, np.ndarray], tmp_path: Path
) -> None:
    path, islands = big_slide
    model = tiny_model("vit", tile_px=56)
    out = embed_slide(path, model, tmp_path, tile_px=56, mpp=3.0, batch_size=16, num_workers=1)
    with h5py.File(out) as f:
        coords, feats, size = f["coords"][:], f["features"][:], float(f.attrs["patch_size_level0"])
    assert size == 56 * 3.0 / 0.25
    h, w = BIG_SLIDE_SHAPE
    assert 0 < len(coords) < (h // size) * (w // size)  # the glass between islands is left out
    cx, cy = coords[:, 0] + size / 2, coords[:, 1] + size / 2
    assert _inside(cx, cy, islands, margin=size / 2).all(), "every tile centre lies on a pasted piece"
    assert feats.shape[0] == len(coords) and np.isfinite(feats).all() and feats.std(0).max() > 0


def test_zlib_big_slide_reads_back_the_same_tissue_losslessly(
    big_slide, tmp_path: Path, shared_data: Path
) -> None:
    """``compression="zlib"`` (for machines without imagecodecs) writes the same pyramid: its tiles equal the
    JPEG slide's up to JPEG's error, and exactly what ``write_big_slide`` rendered (checked on one tissue tile)."""
    from itertools import islice

    big = big_slide_module()
    jpeg_path, islands = big_slide
    h, w = BIG_SLIDE_SHAPE
    path = big.write_big_slide(tmp_path / "z.tif", w, h, data=shared_data, compression="zlib")
    ys, xs = np.mgrid[0 : h // TILE, 0 : w // TILE]
    inside = _inside(xs * TILE + TILE / 2, ys * TILE + TILE / 2, islands, margin=-TILE)  # wholly in tissue
    row, col = int(ys[inside][0]), int(xs[inside][0])
    with open_pyramid(path) as z, open_pyramid(jpeg_path) as j:
        assert [lv.shape for lv in z.levels] == [lv.shape for lv in j.levels]
        a = z.read_region((2000, 1500), 0, (512, 512)).astype(np.int16)
        b = j.read_region((2000, 1500), 0, (512, 512)).astype(np.int16)
        native = z.read_region((col * TILE, row * TILE), 0, (TILE, TILE))
    assert np.abs(a - b).mean() < 4  # JPEG q85 vs lossless
    # level 0 re-rendered as write_big_slide does (its seed 0 and island layout), tiles in row-major order
    tiles = big._tiles((h, w), 1, islands, big._sources(shared_data), np.random.default_rng(0))
    rendered = next(islice(tiles, row * -(-w // TILE) + col, None))
    assert native.std() > 10  # tissue, not glass
    np.testing.assert_array_equal(native, rendered)
