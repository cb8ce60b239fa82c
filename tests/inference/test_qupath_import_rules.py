"""QuPath's import rules (qupath-core ``PathObjectTypeAdapters``: a FeatureCollection of ``Feature``s, each with a
``geometry`` and ``properties.objectType`` / ``classification {name, color [r, g, b]}`` / ``measurements {name:
number}``; coordinates in the image's level-0 px) checked strictly on ``pathdistill qupath`` outputs of CLAM- and
TRIDENT-written files, whose squares must be the files' own tiles."""

from __future__ import annotations

import itertools
import json
import math
import time
from pathlib import Path

import h5py
import numpy as np

from napari_pathdistill.cli.main import main
from napari_pathdistill.inference import qupath

OBJECT_TYPES = {"annotation", "detection", "tile", "cell"}  # what QuPath creates objects of (else: a warning)


def _no_constant(name: str) -> float:
    raise AssertionError(f"{name} is not JSON (RFC 8259): QuPath's Gson reader may refuse it")


def _check_ring(ring: list) -> None:
    """A closed linear ring of >= 4 finite (x, y) positions, of non-zero area, no edge crossing another."""
    assert len(ring) >= 4 and ring[0] == ring[-1]
    pts = np.asarray(ring, dtype=np.float64)
    assert pts.shape[1] == 2 and np.isfinite(pts).all()
    x, y = pts[:, 0], pts[:, 1]
    assert 0.5 * float(np.sum(x[:-1] * y[1:] - x[1:] * y[:-1])) > 0  # RFC 7946 orientation (y up), non-zero
    edges = list(itertools.pairwise(pts))
    for i, (a, b) in enumerate(edges):
        for j in range(i + 2, len(edges) - (i == 0)):  # edges that share no vertex
            c, d = edges[j]
            assert not _cross(a, b, c, d), f"edges {i} and {j} intersect"


def _cross(a: np.ndarray, b: np.ndarray, c: np.ndarray, d: np.ndarray) -> bool:
    def side(p: np.ndarray, q: np.ndarray, r: np.ndarray) -> float:
        return float((q[0] - p[0]) * (r[1] - p[1]) - (q[1] - p[1]) * (r[0] - p[0]))

    return side(a, b, c) * side(a, b, d) < 0 and side(c, d, a) * side(c, d, b) < 0


def validate(text: str) -> dict:
    """The FeatureCollection in ``text`` if QuPath imports it as written; AssertionError naming what is not."""
    doc = json.loads(text, parse_constant=_no_constant)
    assert doc["type"] == "FeatureCollection" and isinstance(doc["features"], list)
    for feat in doc["features"]:
        assert feat["type"] == "Feature" and feat["geometry"]["type"] == "Polygon"
        for ring in feat["geometry"]["coordinates"]:
            _check_ring(ring)
        props = feat["properties"]
        assert props["objectType"] in OBJECT_TYPES
        cls = props["classification"]
        assert isinstance(cls["name"], str) and cls["name"]
        assert len(cls["color"]) == 3 and all(isinstance(v, int) and 0 <= v <= 255 for v in cls["color"])
        for name, value in props.get("measurements", {}).items():
            assert isinstance(name, str) and isinstance(value, float) and math.isfinite(value)
    return doc


def _squares(doc: dict) -> np.ndarray:
    """(N, 4) x0, y0, x1, y1 of the squares."""
    rings = np.asarray([f["geometry"]["coordinates"][0] for f in doc["features"]])
    return np.c_[rings[:, 0], rings[:, 2]]


def _clam_file(path: Path) -> np.ndarray:
    """CLAM's h5_files/<slide>.h5 of two tissue contours (grids from their bounding boxes, 3 px apart in x)."""
    grids = [np.meshgrid(np.arange(x0, x0 + 900, 256), np.arange(y0, y0 + 700, 256), indexing="ij")
             for x0, y0 in ((100, 50), (103, 1000))]  # fmt: skip
    coords = np.concatenate([np.array([xx.flatten(), yy.flatten()]).T for xx, yy in grids]).astype(np.int32)
    with h5py.File(path, "w") as f:
        f.create_dataset("features", data=np.random.default_rng(0).normal(size=(len(coords), 8)).astype(np.float32),
                         maxshape=(None, 8), chunks=(32, 8))  # fmt: skip
        f.create_dataset("coords", data=coords, maxshape=(None, 2), chunks=(32, 2))
    return coords


def test_clam_clusters_and_similar_tiles_are_its_tiles(tmp_path: Path) -> None:
    """Each square is a tile of the file at its level-0 coords, 256 px (CLAM's step: the most common distance of
    neighbours, not the 3 px between the two contours' grids)."""
    coords = _clam_file(tmp_path / "slide.h5")
    out = tmp_path / "c.geojson"
    assert main(["qupath", str(tmp_path / "slide.h5"), "--out", str(out), "--clusters", "3"]) == 0
    doc = validate(out.read_text())
    np.testing.assert_array_equal(_squares(doc), np.c_[coords, coords + 256])
    assert main(["qupath", str(tmp_path / "slide.h5"), "--out", str(out), "--similar-to", "900,1300",
                 "--annotations", "--threshold", "-1"]) == 0  # fmt: skip
    doc = validate(out.read_text())
    assert {f["properties"]["objectType"] for f in doc["features"]} == {"annotation"}
    x0, y0, x1, y1 = _squares(doc)[
        0
    ]  # the query: the tile holding level-0 (900, 1300), of the second contour
    assert (x0, y0) == (871, 1256) and (x1 - x0, y1 - y0) == (256, 256)
    assert sorted(map(tuple, _squares(doc)[:, :2])) == sorted(map(tuple, coords.astype(float)))


def test_trident_file_at_10x_on_a_20x_slide(tmp_path: Path) -> None:
    """TRIDENT (``IO.save_h5``: chunks of one row; the patcher's attrs on ``coords``) at 10x on a 20x slide:
    256 px patches are 512 level-0 px, the coords level-0 on a lattice from 0."""
    xx, yy = np.meshgrid(np.arange(0, 2220, 512), np.arange(0, 2967, 512), indexing="ij")
    coords = np.array([xx.flatten(), yy.flatten()]).T.astype(np.int64)
    path = tmp_path / "CMU-1-Small-Region.h5"
    with h5py.File(path, "w") as f:
        for key, val in (("features", np.ones((len(coords), 4), np.float16)), ("coords", coords)):
            f.create_dataset(key, data=val, maxshape=(None, *val.shape[1:]), chunks=(1, *val.shape[1:]))
        f["features"].attrs.update({"name": path.stem, "savetodir": str(tmp_path)})
        f["coords"].attrs.update({"patch_size": 256, "patch_size_level0": 512, "level0_magnification": 20,
                                  "target_magnification": 10, "overlap": 0, "name": path.stem,
                                  "savetodir": str(tmp_path), "level0_width": 2220, "level0_height": 2967})  # fmt: skip
    out = tmp_path / "t.geojson"
    assert main(["qupath", str(path), "--out", str(out), "--clusters", "1"]) == 0
    np.testing.assert_array_equal(_squares(validate(out.read_text())), np.c_[coords, coords + 512])


def test_ten_thousand_tiles_stay_small(tmp_path: Path) -> None:
    """100 x 100 tiles of a thresholded similarity export: importable, under 400 bytes a tile (time printed)."""
    side = 100
    xx, yy = np.meshgrid(np.arange(side), np.arange(side))
    coords = np.round(np.c_[xx.ravel(), yy.ravel()] * 224.449).astype(np.int64)
    cosine = np.cos(np.linspace(0, 3, side * side))
    start = time.perf_counter()
    col = qupath.similarity_collection(coords, 224.449, cosine, query=0, threshold=-1.0)
    path = qupath.write_geojson(col, tmp_path / "s.geojson")
    print(f"10,000 tiles: {time.perf_counter() - start:.2f} s, {path.stat().st_size / 1e6:.1f} MB")
    doc = validate(path.read_text())
    assert len(doc["features"]) == side * side and path.stat().st_size < 400 * side * side
    np.testing.assert_allclose(_squares(doc)[:, :2], coords[np.r_[0, 1 : side * side]])
