"""``pathdistill tiles`` and ``pathdistill view`` on the real CMU-1-Small-Region slide."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from skimage.io import imread

from napari_pathdistill.cli.main import main
from napari_pathdistill.wsi import make_tile_grid, open_pyramid, read_tiles


def test_tiles_writes_csv_preview_and_tiles(tmp_path: Path, cmu_svs: Path, capsys) -> None:
    out = tmp_path / "out"
    assert main(["tiles", str(cmu_svs), "--out", str(out), "--save-tiles", "2", "--max-size", "1024"]) == 0
    assert "tiles of 224 px at 0.5 um/px" in capsys.readouterr().out
    rows = list(csv.DictReader((out / "tiles.csv").open()))
    meta = json.loads((out / "grid.json").read_text())
    assert meta["n_tiles"] == len(rows) > 0 and meta["slide_mpp"] == [0.499, 0.499]
    with open_pyramid(cmu_svs) as pyr:
        from napari_pathdistill.wsi import detect_tissue

        grid = make_tile_grid(pyr, mask=detect_tissue(pyr, max_size=1024))
        first = read_tiles(pyr, grid, [0])[0]
    np.testing.assert_array_equal([[int(r["x"]), int(r["y"])] for r in rows], grid.coords)
    np.testing.assert_array_equal(imread(out / "tiles" / "tile_00000.png"), first)
    preview = imread(out / "preview.png")
    assert preview.shape[:2] == imread(out / "tissue_mask.png").shape and preview.ndim == 3


def test_tiles_reports_errors(tmp_path: Path, capsys) -> None:
    assert main(["tiles", str(tmp_path / "missing.svs"), "--out", str(tmp_path / "o")]) == 1
    assert "does not exist" in capsys.readouterr().err


def test_tiles_mpp_override_only_for_a_slide_without_mpp(
    tmp_path: Path, cmu_svs: Path, tcga_svs: Path
) -> None:
    """``--mpp-override`` is the level-0 um/px of a slide whose file has none: the TCGA slide takes it (1 um/px
    tiles of 224 px = 896 level-0 px at 0.25 um/px), CMU keeps its own 0.499 um/px."""
    for slide, slide_mpp, size in ((tcga_svs, [0.25, 0.25], 896.0), (cmu_svs, [0.499, 0.499], 224 / 0.499)):
        out = tmp_path / slide.stem
        opts = ["--mpp", "1", "--mpp-override", "0.25", "--max-size", "512"]
        assert main(["tiles", str(slide), "--out", str(out), *opts]) == 0
        meta = json.loads((out / "grid.json").read_text())
        assert meta["slide_mpp"] == slide_mpp and meta["mpp"] == 1.0
        assert meta["size_level0"] == pytest.approx(size)


def test_tiles_refuses_a_negative_mpp_override(tmp_path: Path, tcga_svs: Path, capsys) -> None:
    assert main(["tiles", str(tcga_svs), "--out", str(tmp_path / "o"), "--mpp-override", "-1"]) == 1
    assert "um/px" in capsys.readouterr().err


def test_view_needs_a_slide(capsys) -> None:
    assert main(["view"]) == 2
    assert "--sample" in capsys.readouterr().err


@pytest.mark.napari
def test_view_sample_screenshot(tmp_path: Path, qtbot, own_napari_app) -> None:
    shot = tmp_path / "view.png"
    assert main(["view", "--sample", "--widgets", "Tissue and tile grid", "--screenshot", str(shot)]) == 0
    img = imread(shot)[..., :3].astype(int)
    assert (img.max(axis=2) - img.min(axis=2) > 40).mean() > 0.02  # H&E pixels are on screen


def test_tiles_threshold_gives_the_widget_s_grid_on_faint_he(tmp_path: Path, cmu_svs: Path, capsys) -> None:
    """A faint H&E (CMU's optical density x 0.15): at the default threshold the mask keeps a few bits; the Tissue
    widget's threshold lowered to 0.05 gets the tissue back, but `pathdistill tiles` had no threshold option, so
    its tiles.csv could not be the grid the widget showed. ``--threshold`` gives the widget's core grid."""
    import openslide
    from skimage.io import imsave

    from napari_pathdistill.wsi.tissue_grid import tissue_grid

    with openslide.OpenSlide(str(cmu_svs)) as slide:
        rgb = np.asarray(slide.read_region((0, 0), 0, slide.dimensions).convert("RGB"), np.float32)
    faint = tmp_path / "faint.png"
    imsave(faint, (255 - (255 - rgb) * 0.15).astype(np.uint8), check_contrast=False)
    coords = {}
    for threshold in ("0.08", "0.05"):
        out = tmp_path / threshold
        assert main(["tiles", str(faint), "--out", str(out), "--threshold", threshold]) == 0
        rows = list(csv.DictReader((out / "tiles.csv").open()))
        coords[threshold] = np.array([[int(r["x"]), int(r["y"])] for r in rows]).reshape(-1, 2)
        assert json.loads((out / "grid.json").read_text())["threshold"] == float(threshold)
        np.testing.assert_array_equal(
            coords[threshold], tissue_grid(faint, threshold=float(threshold)).grid.coords
        )
    assert len(coords["0.05"]) > 5 * max(1, len(coords["0.08"]))  # the faint tissue is found again
    assert main(["tiles", str(faint), "--out", str(tmp_path / "d")]) == 0  # the default is the widget's
    assert json.loads((tmp_path / "d" / "grid.json").read_text())["threshold"] == 0.08
    with pytest.raises(SystemExit):
        main(["tiles", str(faint), "--out", str(tmp_path / "n"), "--threshold", "-0.1"])
    assert "a number >= 0" in capsys.readouterr().err


def test_tiles_of_a_blank_slide_or_with_no_tile_kept_say_why(tmp_path: Path, cmu_svs: Path, capsys) -> None:
    """A slide of bare glass, or tiles that no tissue fills enough: exit 0 with an empty tiles.csv, as before,
    but a note now says why and what to change (before: only "0 tiles of 224 px ...")."""
    import tifffile

    glass = np.random.default_rng(0).normal((236, 234, 240), 2.0, (1500, 2000, 3))
    blank = tmp_path / "blank.tif"
    tifffile.imwrite(blank, np.clip(glass, 0, 255).astype(np.uint8), tile=(256, 256), photometric="rgb",
                     resolution=(4e4, 4e4), resolutionunit="CENTIMETER")  # fmt: skip
    assert main(["tiles", str(blank), "--out", str(tmp_path / "b")]) == 0
    err = capsys.readouterr().err
    assert "note: no tissue found on blank.tif at --threshold 0.08" in err and "--threshold 0.05" in err
    assert (tmp_path / "b" / "tiles.csv").read_text().splitlines() == [
        "index,x,y,size_level0,level,tissue_fraction"
    ]
    assert main(["tiles", str(cmu_svs), "--out", str(tmp_path / "c"), "--mpp", "4", "--min-tissue", "1"]) == 0
    err = capsys.readouterr().err
    assert (
        "no tile of 224 px at 4 um/px reaches --min-tissue 1" in err and "% of CMU-1-Small-Region.svs" in err
    )


def test_tiles_shows_the_progress_of_its_long_reads(tmp_path: Path, cmu_svs: Path, capsys) -> None:
    """The thumbnail read (minutes on a 60k px slide without a pyramid) and --save-tiles showed nothing until the
    end; each has a bar on stderr now, run to its total."""
    import re

    out = tmp_path / "out"
    assert main(["tiles", str(cmu_svs), "--out", str(out), "--save-tiles", "70"]) == 0
    err = capsys.readouterr().err
    assert re.search(r"thumbnail: 100%.*\| (\d+)/\1 \[", err), err
    assert re.search(r"tiles: 100%.*\| 53/53 \[", err), err  # 53 tissue tiles, fewer than the 70 asked
