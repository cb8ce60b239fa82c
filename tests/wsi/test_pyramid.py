"""Pyramid: real slides (SVS JPEG, SVS JPEG 2000, DICOM, OME-TIFF) and TIFFs written with tifffile."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import openslide
import pytest
from PIL import Image

from _wsi_files import SPARSE_COLOUR, write_pyramid_tiff
from napari_pathdistill.errors import WSIError
from napari_pathdistill.wsi import open_pyramid
from napari_pathdistill.wsi._backend_utils import composite_rgba


def _os_region(
    slide: openslide.OpenSlide, loc: tuple[int, int], level: int, size: tuple[int, int]
) -> np.ndarray:
    """openslide-python read_region, alpha composited on white (the OpenSlide docs' rule), written out here.

    Where alpha is 255 this is exactly ``.convert("RGB")``; OpenSlide yields alpha < 255 outside the slide
    and on the last row/column of level > 0 reads at a fractional level offset.
    """
    image = slide.read_region(loc, level, size)
    rgba = np.asarray(image).astype(np.int64)
    a = rgba[..., 3:]
    out = (rgba[..., :3] * a + 255 * (255 - a) + 127) // 255
    opaque = a[..., 0] == 255
    np.testing.assert_array_equal(out[opaque], np.asarray(image.convert("RGB"))[opaque])
    return out.astype(np.uint8)


def test_cmu_svs_metadata(cmu_svs: Path) -> None:
    with open_pyramid(cmu_svs) as pyr:
        assert pyr.backend == "openslide"
        assert pyr.mpp == pytest.approx((0.499, 0.499))
        assert [lv.shape for lv in pyr.levels] == [(2967, 2220)]
        assert pyr.levels[0].tile_shape == (240, 240)  # Aperio native tile
        assert pyr.associated_image_names() == ["label", "macro", "thumbnail"]
        label = pyr.read_associated("label")
        assert label.ndim == 3 and label.shape[2] == 3 and label.dtype == np.uint8
        with pytest.raises(WSIError, match="No associated image 'nope'"):
            pyr.read_associated("nope")


@pytest.mark.parametrize("fixture", ["cmu_svs", "tcga_svs", "cmu_dicom_dir"])
def test_dask_chunks_equal_openslide_at_every_level(fixture: str, request: pytest.FixtureRequest) -> None:
    """Every chunk (level > 0: a sample incl. edge chunks) equals openslide-python read_region + convert."""
    path = request.getfixturevalue(fixture)
    rng = np.random.default_rng(0)
    with open_pyramid(path) as pyr:
        target = path if path.is_file() else next(p for p in sorted(path.iterdir()) if p.suffix == ".dcm")
        slide = openslide.OpenSlide(str(target))
        for level, arr in enumerate(pyr.to_dask()):
            lv = pyr.levels[level]
            assert arr.shape == (*lv.shape, 3) and arr.dtype == np.uint8
            assert arr.chunksize[:2] == lv.tile_shape or min(lv.shape) < max(lv.tile_shape)
            ny, nx = arr.numblocks[:2]
            blocks = {(ny - 1, nx - 1), (0, nx - 1), (ny - 1, 0)} | {
                tuple(rng.integers(0, [ny, nx])) for _ in range(6)
            }
            for by, bx in blocks:
                y, x = sum(arr.chunks[0][:by]), sum(arr.chunks[1][:bx])
                h, w = arr.chunks[0][by], arr.chunks[1][bx]
                got = arr.blocks[by, bx].compute()
                loc = (round(x * lv.downsample), round(y * lv.downsample))
                np.testing.assert_array_equal(
                    got, _os_region(slide, loc, level, (w, h)), err_msg=f"L{level} {by},{bx}"
                )
        slide.close()


def test_level0_dask_equals_one_big_read(tcga_svs: Path) -> None:
    """At level 0 chunk stitching is exact: the whole level equals a single OpenSlide read."""
    with open_pyramid(tcga_svs) as pyr, openslide.OpenSlide(str(tcga_svs)) as slide:
        got = pyr.to_dask()[0].compute()
        np.testing.assert_array_equal(got, _os_region(slide, (0, 0), 0, slide.dimensions))
        assert pyr.mpp is None
        assert pyr.levels[1].downsample == pytest.approx(slide.level_downsamples[1], abs=0)


def test_dicom_folder_matches_svs_geometry(cmu_dicom_dir: Path, cmu_svs: Path) -> None:
    with open_pyramid(cmu_dicom_dir) as dcm, open_pyramid(cmu_svs) as svs:
        assert dcm.levels[0].shape == svs.levels[0].shape
        assert dcm.mpp == pytest.approx(svs.mpp, rel=1e-3)
        a = dcm.read_region((1000, 1000), 0, (256, 256)).astype(float)
        b = svs.read_region((1000, 1000), 0, (256, 256)).astype(float)
        assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.95  # same tissue, re-encoded JPEG


def test_out_of_slide_is_white(cmu_svs: Path) -> None:
    with open_pyramid(cmu_svs) as pyr:
        img = pyr.read_region((-100, -50), 0, (300, 200))
        assert (img[:50] == 255).all() and (img[:, :100] == 255).all()
        assert img[60:, 110:].mean() < 250


def test_composite_rgba_matches_pil() -> None:
    rng = np.random.default_rng(1)
    rgba = rng.integers(0, 256, size=(64, 64, 4), dtype=np.uint8)
    white = Image.new("RGBA", (64, 64), (255, 255, 255, 255))
    ref = np.asarray(Image.alpha_composite(white, Image.fromarray(rgba, "RGBA")).convert("RGB")).astype(int)
    assert np.abs(composite_rgba(rgba).astype(int) - ref).max() <= 1
    rgba[..., 3] = 255
    np.testing.assert_array_equal(composite_rgba(rgba), np.asarray(Image.fromarray(rgba).convert("RGB")))
    rgba[..., 3] = 0
    assert (composite_rgba(rgba) == 255).all()


@pytest.mark.parametrize("ome", [False, True])
def test_tifffile_pyramid_roundtrip(tmp_path: Path, cmu_rgb: np.ndarray, ome: bool) -> None:
    image = cmu_rgb[:1000, :900]
    levels = write_pyramid_tiff(tmp_path / "p.ome.tif" if ome else tmp_path / "p.tif", image, ome=ome)
    path = next(tmp_path.iterdir())
    with open_pyramid(path) as pyr:
        assert pyr.backend == "tifffile"
        assert pyr.mpp == pytest.approx((0.5, 0.5))
        assert [lv.shape for lv in pyr.levels] == [lv.shape[:2] for lv in levels]
        assert pyr.levels[1].downsample == pytest.approx((900 / 450 + 1000 / 500) / 2)
        for arr, ref in zip(pyr.to_dask(), levels, strict=True):
            assert arr.chunksize[:2] == (128, 128)
            np.testing.assert_array_equal(arr.compute(), ref)
        np.testing.assert_array_equal(pyr.read_region((200, 400), 1, (130, 70)), levels[1][200:270, 100:230])
        edge = pyr.read_region((850, 950), 0, (100, 100))  # runs off the image: white there
        np.testing.assert_array_equal(edge[:50, :50], image[950:, 850:])
        assert (edge[50:] == 255).all()


def test_ome_tiff_level_with_a_fractional_downsample(tmp_path: Path, cmu_rgb: np.ndarray) -> None:
    """A 1000 px level 0 over a 400 px level 1: downsample 2.5 (1000 / 400), not rounded to 2 or 3. OpenSlide's
    read_region takes level-0 coordinates, so level-0 (500, 250) is level-1 pixel (200, 100). (An OME-TIFF:
    tifffile lists such a SubIFD level only in OME series.)"""
    import tifffile

    level0 = cmu_rgb[:1000, :1000]
    level1 = cmu_rgb[1000:1400, 1000:1400]  # any content: the test only follows coordinates
    kw = {"tile": (128, 128), "compression": "zlib", "photometric": "rgb"}
    path = tmp_path / "frac.ome.tif"
    with tifffile.TiffWriter(path, ome=True) as tw:
        meta = {"PhysicalSizeX": 0.5, "PhysicalSizeY": 0.5}
        tw.write(level0, subifds=1, resolution=(2e4, 2e4), resolutionunit="CENTIMETER", metadata=meta, **kw)
        tw.write(level1, subfiletype=1, metadata=None, **kw)
    with open_pyramid(path) as pyr:
        assert pyr.backend == "tifffile" and pyr.levels[1].downsample == 2.5
        np.testing.assert_array_equal(pyr.read_region((500, 250), 1, (64, 48)), level1[100:148, 200:264])
        assert pyr.best_level_for_downsample(2.4) == 0 and pyr.best_level_for_downsample(2.5) == 1


def test_ome_tiff_cross_scanner(os2_pair: tuple[Path, Path]) -> None:
    """The OS-2 OME-TIFFs are read by tifffile (OpenSlide rejects them), with MPP from the OME-XML."""
    import tifffile

    ndpi, vsi = os2_pair
    assert openslide.OpenSlide.detect_format(str(ndpi)) is None
    with open_pyramid(ndpi) as a, open_pyramid(vsi) as b:
        assert a.backend == b.backend == "tifffile"
        assert a.mpp == pytest.approx((0.2271, 0.2271), abs=1e-4)
        assert b.mpp == pytest.approx((0.346, 0.346), abs=2e-3)
        assert a.levels[0].shape[1] * a.mpp[1] == pytest.approx(b.levels[0].shape[1] * b.mpp[1], rel=0.01)
        np.testing.assert_array_equal(
            a.to_dask()[0][:700, 300:900].compute(), tifffile.imread(ndpi)[:700, 300:900]
        )


def test_sparse_100k_opens_lazily(sparse_tiff: Path) -> None:
    tracemalloc.start()  # numpy's buffers are traced: a level read whole would be 30 GB (level 0) or 470 MB
    try:
        pyr = open_pyramid(sparse_tiff)
        levels = pyr.to_dask()
        peak_mb = tracemalloc.get_traced_memory()[1] / 1e6
    finally:
        tracemalloc.stop()
    assert levels[0].shape == (100_000, 100_000, 3)
    assert [lv.downsample for lv in pyr.levels] == [1.0, 2.0, 4.0, 8.0]
    assert peak_mb < 50, (
        peak_mb
    )  # no level read (was: < 0.5 s and a process high-water mark that cannot grow)
    np.testing.assert_array_equal(levels[0][0, 5 * 256 + 3].compute(), SPARSE_COLOUR)
    assert (levels[0][51_300:51_400, 51_300:51_400].compute() == SPARSE_COLOUR).all()  # tile (200, 200)
    assert (levels[0][99_990:, 99_990:].compute() == 255).all()  # empty tile: white background
    pyr.close()


@pytest.mark.parametrize(
    ("content", "name", "match"),
    [
        (b"", "empty.svs", r"is empty \(0 bytes\)"),
        (
            b"II*\x00" + b"\x00" * 100,
            "trunc.tif",
            "not a readable TIFF|cannot read|TIFF without a readable image",
        ),
        (b"hello world", "notes.ndpi", "not a whole-slide image|cannot read"),
    ],
)
def test_bad_files_raise_wsierror(tmp_path: Path, content: bytes, name: str, match: str) -> None:
    p = tmp_path / name
    p.write_bytes(content)
    with pytest.raises(WSIError, match=match):
        open_pyramid(p)


def test_truncated_svs(tmp_path: Path, cmu_svs: Path) -> None:
    p = tmp_path / "cut.svs"
    p.write_bytes(cmu_svs.read_bytes()[: cmu_svs.stat().st_size // 3])
    with pytest.raises(WSIError):
        pyr = open_pyramid(p)  # either the open or the first read of the missing tiles fails clearly
        pyr.to_dask()[0].compute()


def test_missing_and_empty_folder(tmp_path: Path) -> None:
    with pytest.raises(WSIError, match="does not exist"):
        open_pyramid(tmp_path / "nope.svs")
    with pytest.raises(WSIError, match="empty folder"):
        open_pyramid(tmp_path)


def test_any_slicing_gives_the_same_pixels(tcga_svs: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Windows across chunk borders equal the same window of the full level (served from whole tiles)."""
    monkeypatch.setenv("PATHDISTILL_CHUNK_CACHE_MB", "0")  # no cache: every read decodes again
    with open_pyramid(tcga_svs) as pyr:
        full = pyr.to_dask()[1].compute()
        arr = pyr.to_dask()[1]
        for ys, xs in [
            (slice(100, 400), slice(200, 600)),
            (slice(1700, 1783), slice(2000, 2221)),
            (5, slice(None)),
        ]:
            np.testing.assert_array_equal(arr[ys, xs].compute(), full[ys, xs])


def test_dask_keys_never_reused_by_a_later_pyramid(tmp_path: Path) -> None:
    """napari registers a global opportunistic dask cache keyed by task names: a later slide (here: another
    file with the same name, opened after the first is garbage-collected) must never get the first one's
    keys, or it would be shown the first one's cached pixels."""
    from dask.cache import Cache

    files = []
    for i, value in enumerate((40, 200)):
        path = tmp_path / str(i) / "slide.tif"
        path.parent.mkdir()
        write_pyramid_tiff(path, np.full((256, 256, 3), value, np.uint8), levels=2)
        files.append((path, value))
    names = set()
    with Cache(2e8):
        for _ in range(50):
            for path, value in files:
                with open_pyramid(path) as pyr:
                    level0 = pyr.to_dask()[0]
                    names.add(level0.name)
                    assert int(level0[:64, :64].compute().mean()) == value
    assert len(names) == 100


def test_fallback_mpp_fills_only_a_missing_mpp(cmu_svs: Path, tcga_svs: Path) -> None:
    """One user-given um/px (``--mpp-override``, the widgets' 'slide um/px override') serves a whole cohort: the
    slide without MPP takes it, a slide whose file states its MPP keeps its own."""
    with open_pyramid(tcga_svs, fallback_mpp=0.25) as tcga, open_pyramid(cmu_svs, fallback_mpp=0.25) as cmu:
        assert tcga.mpp == (0.25, 0.25)
        assert cmu.mpp == pytest.approx((0.499, 0.499))
    with open_pyramid(tcga_svs, fallback_mpp=0.0) as tcga:
        assert tcga.mpp is None  # 0 (the widgets' "none") leaves it in level-0 pixels
    for bad in (-0.25, float("nan")):
        with pytest.raises(ValueError, match="fallback_mpp"):
            open_pyramid(tcga_svs, fallback_mpp=bad)
