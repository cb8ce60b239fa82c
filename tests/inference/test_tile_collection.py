"""The tile FeatureCollection written as text without a dict per tile is the same JSON as its dicts dumped."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from napari_pathdistill.inference.qupath import clusters_geojson, tiles_geojson, write_geojson


def _collection(n: int = 300):
    rng = np.random.default_rng(0)
    coords = rng.integers(0, 90_000, (n, 2))
    cosine = rng.uniform(-1, 1, n)
    cosine[:3] = [np.nan, np.inf, -np.inf]  # json.dumps writes NaN / Infinity / -Infinity for these
    names = [("query" if i == 0 else 'similar "b" é') for i in range(n)]  # escaping, non-ASCII
    colours = {"query": (255, 215, 0), 'similar "b" é': (220, 20, 60)}
    return tiles_geojson(
        coords, 224.449, names, colours, measurements={"cosine": cosine, "rank": np.arange(n)}
    )


def test_the_written_text_is_json_dumps_of_its_dicts(tmp_path: Path) -> None:
    col = _collection()
    fast = col.text()  # before any dict is built
    as_dicts = json.dumps({"type": "FeatureCollection", "features": col["features"]})
    assert fast == as_dicts  # character for character
    assert json.loads(
        write_geojson(_collection(), tmp_path / "t.geojson").read_text(), parse_constant=str
    ) == (json.loads(as_dicts, parse_constant=str))
    assert (
        col == json.loads(as_dicts) or col["features"][0]["properties"]["measurements"]["cosine"] != 0
    )  # NaN


def test_it_is_the_feature_collection_mapping_and_edits_are_written(tmp_path: Path) -> None:
    col = clusters_geojson(np.array([[0, 0], [448, 0]]), 448.0, np.array([1, 2]))
    assert dict(col) == {"type": "FeatureCollection", "features": col["features"]} and col.n_tiles == 2
    assert col == json.loads(col.text())
    for feat in col["features"]:  # as `pathdistill qupath --annotations` does
        feat["properties"]["objectType"] = "annotation"
    written = json.loads(write_geojson(col, tmp_path / "a.geojson").read_text())
    assert [f["properties"]["objectType"] for f in written["features"]] == ["annotation"] * 2


def test_a_class_without_a_colour_is_refused_at_once() -> None:
    with pytest.raises(ValueError, match="no colour for the classes"):
        tiles_geojson(np.zeros((1, 2)), 10.0, ["x"], {"y": (1, 2, 3)})
