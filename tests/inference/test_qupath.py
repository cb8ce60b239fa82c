"""QuPath GeoJSON export of tile clusters and similar tiles (core and ``pathdistill qupath``), on a real slide's
embedding and on a CLAM-layout file."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest

from napari_pathdistill.cli.main import main
from napari_pathdistill.inference import qupath
from napari_pathdistill.inference.embed import embed_slide
from napari_pathdistill.metrics.features import cosine_to
from napari_pathdistill.models.testing import tiny_model


@pytest.fixture(scope="module")
def h5(cmu_svs: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("qupath")
    return embed_slide(cmu_svs, tiny_model("vit"), out, mpp=4.0, min_tissue=0.0, batch_size=16)


def _squares_ok(collection: dict, coords: np.ndarray, size: float) -> None:
    for feat, (x, y) in zip(collection["features"], coords, strict=True):
        ring = feat["geometry"]["coordinates"][0]
        assert feat["geometry"]["type"] == "Polygon" and ring[0] == ring[-1] and len(ring) == 5
        assert ring[0] == [x, y] and ring[2] == [x + size, y + size]


def test_clusters_as_qupath_classes_with_one_colour_each(h5: Path, tmp_path: Path) -> None:
    feats, coords, size = qupath.read_features(h5)
    col = qupath.cluster_collection(h5, 3)
    assert col["type"] == "FeatureCollection" and len(col["features"]) == len(feats)
    _squares_ok(col, coords, size)
    colours: dict[str, tuple] = {}
    for feat in col["features"]:
        cls = feat["properties"]["classification"]
        assert feat["properties"]["objectType"] == "detection" and cls["name"].startswith("cluster ")
        assert colours.setdefault(cls["name"], tuple(cls["color"])) == tuple(cls["color"])
    assert 1 < len(colours) <= 3 and len(set(colours.values())) == len(colours)
    path = qupath.write_geojson(col, tmp_path / "c.geojson")
    assert json.loads(path.read_text()) == col


def test_similar_tiles_top_k_and_threshold(h5: Path) -> None:
    feats, _, _ = qupath.read_features(h5)
    cos = cosine_to(feats, 4)
    top = qupath.similar_collection(h5, 4, top_k=5)
    names = [f["properties"]["classification"]["name"] for f in top["features"]]
    got = [f["properties"]["measurements"]["cosine"] for f in top["features"]]
    assert names == ["query"] + ["similar"] * 5 and got[0] == pytest.approx(1.0, abs=1e-5)
    assert got[1:] == sorted(got[1:], reverse=True)
    np.testing.assert_allclose(got[1:], np.sort(np.delete(cos, 4))[::-1][:5], rtol=1e-5)
    thr = float(np.median(cos))
    kept = qupath.similar_collection(h5, 4, threshold=thr)["features"][1:]
    assert len(kept) == int((np.delete(cos, 4) >= thr).sum())
    with pytest.raises(Exception, match="out of range"):
        qupath.similar_collection(h5, len(feats), top_k=3)


def test_cli_similar_to_a_point_and_clear_errors(h5: Path, tmp_path: Path, capsys) -> None:
    _, coords, size = qupath.read_features(h5)
    x, y = coords[7] + size / 2
    out = tmp_path / "s.geojson"
    assert main(["qupath", str(h5), "--out", str(out), "--similar-to", f"{x},{y}", "--top-k", "3"]) == 0
    col = json.loads(out.read_text())
    assert col["features"][0]["geometry"]["coordinates"][0][0] == list(coords[7].astype(float))
    assert main(["qupath", str(h5), "--out", str(out), "--similar-to=-50,-50"]) == 1
    assert "no embedded tile contains level-0 point (-50, -50)" in capsys.readouterr().err
    bad = tmp_path / "bad.h5"
    with h5py.File(bad, "w") as f:
        f["x"] = np.zeros(3)
    assert main(["qupath", str(bad), "--out", str(out), "--clusters", "2"]) == 1
    assert "bad.h5 is not a feature file: it needs 'features' (N, D) and 'coords'" in capsys.readouterr().err


def test_clam_layout_tile_side_from_patch_size_and_level(tmp_path: Path) -> None:
    path = tmp_path / "clam.h5"
    rng = np.random.default_rng(0)
    with h5py.File(path, "w") as f:
        f["features"] = rng.standard_normal((12, 8)).astype(np.float32)
        c = f.create_dataset("coords", data=np.stack([np.arange(12) * 512, np.zeros(12)], 1).astype(np.int64))
        c.attrs.update({"patch_size": 256, "patch_level": 1, "downsample": [2.0, 2.0]})
    _, _, size = qupath.read_features(path)
    assert size == 512.0
    assert len(qupath.cluster_collection(path, 2)["features"]) == 12


@pytest.mark.parametrize(
    "make,needle",
    [
        (lambda d: d, "is a folder, not a feature file"),
        (lambda d: d / "missing.h5", "feature file not found"),
        (
            lambda d: (d / "notes.txt").write_text("tile notes") and d / "notes.txt",
            "notes.txt is not an HDF5 file",
        ),
    ],
)
def test_cli_path_that_is_no_feature_file_is_one_clear_line(tmp_path: Path, capsys, make, needle) -> None:
    """A folder, a missing path or a text file: the feature reader's FeatureFileError, not h5py's dump."""
    assert main(["qupath", str(make(tmp_path)), "--out", str(tmp_path / "o.geojson"), "--clusters", "2"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and needle in err
    assert "Unable to synchronously open" not in err and "Errno" not in err


@pytest.mark.parametrize("argv", [["--clusters", "0"], ["--clusters", "-2"], ["--query", "1", "--top-k", "0"],
                                  ["--query", "-1"], ["--query", "1", "--top-k", "3", "--threshold", "0.5"],
                                  # a threshold no cosine reaches exported the query alone, without a word
                                  ["--query", "1", "--threshold", "60"], ["--query", "1", "--threshold", "nan"]])  # fmt: skip
def test_cli_counts_below_one_are_argument_errors(h5: Path, tmp_path: Path, capsys, argv) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["qupath", str(h5), "--out", str(tmp_path / "o.geojson"), *argv])
    assert exc.value.code == 2 and "error: argument" in capsys.readouterr().err
    assert not (tmp_path / "o.geojson").exists()


def test_cli_more_clusters_than_tiles_and_stray_options_are_refused(h5: Path, tmp_path: Path, capsys) -> None:
    n = len(qupath.read_features(h5)[0])
    out = tmp_path / "o.geojson"
    assert main(["qupath", str(h5), "--out", str(out), "--clusters", str(n + 1)]) == 1
    assert f"cannot make {n + 1} clusters of the {n} tiles" in capsys.readouterr().err
    assert main(["qupath", str(h5), "--out", str(out), "--clusters", "2", "--top-k", "3"]) == 2
    assert "do not apply to --clusters" in capsys.readouterr().err
    assert not out.exists()


def test_cli_top_k_default_and_past_the_tiles(h5: Path, tmp_path: Path, capsys) -> None:
    n = len(qupath.read_features(h5)[0])
    out = tmp_path / "o.geojson"
    assert main(["qupath", str(h5), "--out", str(out), "--query", "0"]) == 0
    assert len(json.loads(out.read_text())["features"]) == 1 + 20
    assert main(["qupath", str(h5), "--out", str(out), "--query", "0", "--top-k", str(n + 5)]) == 0
    assert f"note: --top-k {n + 5}, but the file has only {n - 1} other tiles" in capsys.readouterr().out
    cosines = [f["properties"]["measurements"]["cosine"] for f in json.loads(out.read_text())["features"]]
    assert len(cosines) == n and max(cosines) <= 1.0 and min(cosines) >= -1.0


def test_cli_nan_rows_are_left_out_with_one_warning_line(h5: Path, tmp_path: Path, capsys) -> None:
    """The feature reader drops NaN rows (they broke the similarity ranking); the CLI says so once."""
    nan = tmp_path / "nan.h5"
    with h5py.File(h5) as src, h5py.File(nan, "w") as dst:
        feats = src["features"][()]
        feats[2] = np.nan
        dst["features"], dst["coords"] = feats, src["coords"][()]
        dst.attrs.update(dict(src.attrs))
    out = tmp_path / "o.geojson"
    assert main(["qupath", str(nan), "--out", str(out), "--query", "0", "--top-k", str(len(feats))]) == 0
    err = capsys.readouterr().err
    assert err.count("warning: nan.h5: 1 of") == 1 and "NaN or inf" in err
    assert len(json.loads(out.read_text())["features"]) == len(feats) - 1


def test_cluster_colours_are_the_napari_clusters_layers(h5: Path) -> None:
    """The GeoJSON classes took tab20 while the napari clusters layer and legend took napari's label colours:
    both take ``inference.palette.cluster_rgb`` now, so cluster c has one colour in napari and in QuPath."""
    from napari_pathdistill.inference.palette import cluster_rgb, cluster_rgb255

    for k in (1, 3, 6, 20, 64):
        colours = qupath.cluster_colours(k)
        assert list(colours.values()) == cluster_rgb255(k)
        np.testing.assert_allclose(np.asarray(list(colours.values())) / 255, cluster_rgb(k), atol=0.5 / 255)
    assert len(set(cluster_rgb255(60))) == 60  # distinct up to 60 clusters (the widget allows 64)
    col = qupath.cluster_collection(h5, 3)
    for feat in col["features"]:
        c = int(feat["properties"]["classification"]["name"].split()[1])
        assert tuple(feat["properties"]["classification"]["color"]) == cluster_rgb255(3)[c - 1]


def test_cli_query_row_is_the_files_row_when_nan_rows_are_left_out(h5: Path, tmp_path: Path, capsys) -> None:
    """``--query ROW`` names a row of the file; with a NaN row before it the reader's rows shift by one, and the
    export took the next tile as the query (its coords and its similar tiles). A NaN query row is refused."""
    nan = tmp_path / "nan.h5"
    with h5py.File(h5) as src, h5py.File(nan, "w") as dst:
        feats, coords = src["features"][()], src["coords"][()]
        feats[1] = np.nan
        dst["features"], dst["coords"] = feats, coords
        dst.attrs.update(dict(src.attrs))
    out = tmp_path / "q.geojson"
    assert main(["qupath", str(nan), "--out", str(out), "--query", "5", "--top-k", "3"]) == 0
    query = json.loads(out.read_text())["features"][0]
    assert query["properties"]["classification"]["name"] == "query"
    assert query["geometry"]["coordinates"][0][0] == coords[5].astype(float).tolist()
    assert main(["qupath", str(nan), "--out", str(out), "--query", "1"]) == 1
    assert "query tile 1 of nan.h5 has NaN or inf features" in capsys.readouterr().err


def test_cli_out_that_is_a_folder_is_one_clear_line(h5: Path, tmp_path: Path, capsys) -> None:
    """``--out`` naming a folder failed after the export was computed, with the atomic write's temporary name:
    "[Errno 21] Is a directory: '.../.out.1a2b3c' -> 'out'"."""
    assert main(["qupath", str(h5), "--out", str(tmp_path), "--clusters", "2"]) == 1
    err = capsys.readouterr().err
    assert (
        f"error: --out {tmp_path} is a folder: give the .geojson file to write" in err and "Errno" not in err
    )
    assert list(tmp_path.iterdir()) == []
