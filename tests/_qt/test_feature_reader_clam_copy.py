"""``pathdistill embed --format clam``'s ``h5_files/<slide>.h5`` dropped on napari: our feature-file reader takes it
(CLAM's layout) and lands its map on the slide, in um: on the open slide, and on an empty viewer by the
``slide_path`` the copy keeps."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from _shared_data import SHARED_DATA
from napari_pathdistill._feature_reader import get_feature_reader
from napari_pathdistill.inference.clam_output import write_clam
from napari_pathdistill.inference.embed import embed_slide
from napari_pathdistill.models.testing import tiny_model

SLIDE = (SHARED_DATA / "wsi" / "CMU-1-Small-Region.svs").resolve()


@pytest.fixture(scope="module")
def clam_h5(tmp_path_factory) -> Path:
    import dataclasses

    model = tiny_model("vit")
    model.spec = dataclasses.replace(model.spec, mpp=2.0)
    out = tmp_path_factory.mktemp("feats")
    return write_clam(embed_slide(SLIDE, model, out, num_workers=0), out)[0]


def _tile_under(labels, slide_mpp: float, coords: np.ndarray, size: float, i: int) -> int:
    centre = (coords[i, ::-1] + size / 2) * slide_mpp  # level-0 px box centre -> um (y, x)
    return int(labels.data[tuple(np.round(labels.world_to_data(centre)).astype(int))])


def test_the_clam_copy_lands_on_its_slide(make_napari_viewer, clam_h5) -> None:
    assert get_feature_reader(str(clam_h5)) is not None
    with h5py.File(clam_h5, "r") as f:
        coords = f["coords"][()]
    viewer = make_napari_viewer()
    [slide] = viewer.open(str(SLIDE), plugin="napari-pathdistill")
    layers = viewer.open(str(clam_h5), plugin="napari-pathdistill")  # the open slide: not added twice
    assert [ly.name for ly in layers] == [f"{slide.name} embedding map", f"{slide.name} clusters"]
    labels = layers[1]
    assert labels.metadata["pathdistill"]["source"] == "clam"
    assert tuple(str(u) for u in labels.units) == ("micrometer", "micrometer")
    smap = labels.metadata["pathdistill"]["slide_map"]
    for i in (0, len(coords) - 1):  # the last tile, farthest from the origin: where a wrong um/px shows most
        value = _tile_under(labels, slide.scale[-1], coords, smap.grid.size_level0, i)
        assert value == i * smap.n_clusters + smap.clusters[i]
    empty = make_napari_viewer()  # no slide open: the copy's slide_path opens it
    layers = empty.open(str(clam_h5), plugin="napari-pathdistill")
    assert Path(layers[0].metadata["pathdistill"]["path"]).resolve() == SLIDE
    assert [ly.name for ly in layers[-2:]] == [
        f"{layers[0].name} embedding map",
        f"{layers[0].name} clusters",
    ]
