"""The same model installed elsewhere (another venv, a dask worker's mount): its outputs and cache files are its
own. The ``spec`` attr records where the weights file was; only the ``weights`` hash tells checkpoints apart."""

from __future__ import annotations

import dataclasses
import json

import pytest

from napari_pathdistill.inference.embed import embed_slide
from napari_pathdistill.inference.feature_cache import cache_file
from napari_pathdistill.inference.outputs import differing_attrs
from napari_pathdistill.models.testing import tiny_model
from napari_pathdistill.progress import Progress

KW = {"mpp": 4.0, "min_tissue": 0.0, "batch_size": 4, "chunk_batches": 1}  # 24 tiles of the tiny ViT


def _installed_at(model, folder: str):
    """``model`` as loaded from ``<folder>/model.safetensors`` (the same tensors, another location)."""
    moved = dataclasses.replace(model.spec, weights=f"{folder}/model.safetensors")
    clone = type(model).__new__(type(model))
    clone.__dict__.update(model.__dict__, spec=moved)
    return clone


def _attrs(spec, **kw) -> dict:
    return {"model": spec.name, "spec": json.dumps(dataclasses.asdict(spec), default=str), "weights": "abc",
            "tile_px": 56, "mpp": 4.0, "min_tissue": 0.0, **kw}  # fmt: skip


def test_a_spec_that_differs_in_its_weights_location_only_matches(cmu_svs, tmp_path) -> None:
    spec = tiny_model("vit").spec
    here = _attrs(dataclasses.replace(spec, weights="/venv-a/model.safetensors"))
    there = _attrs(dataclasses.replace(spec, weights="/venv-b/model.safetensors"))
    assert differing_attrs(here, there) == []
    assert cache_file(tmp_path, cmu_svs, here) == cache_file(tmp_path, cmu_svs, there)
    other = _attrs(dataclasses.replace(spec, weights="/venv-b/model.safetensors", tile_px=112))
    assert differing_attrs(here, other) == ["spec"]
    assert cache_file(tmp_path, cmu_svs, here) != cache_file(tmp_path, cmu_svs, other)
    assert differing_attrs(here, {**there, "weights": "def"}) == ["weights"]  # another checkpoint


def test_an_output_of_the_same_model_installed_elsewhere_is_kept(cmu_svs, tmp_path) -> None:
    """Was: ``FAILED ...: S.h5 is a complete embedding with other settings (spec: the model's config differs)``."""
    model = tiny_model("vit")
    h5 = embed_slide(cmu_svs, _installed_at(model, "/venv-a/weights"), tmp_path, **KW)
    seen: list[Progress] = []
    assert (
        embed_slide(cmu_svs, _installed_at(model, "/venv-b/weights"), tmp_path, progress=seen.append, **KW)
        == h5
    )
    assert seen[0].stage == "skipped"


@pytest.mark.parametrize("spec", ["not json", b'{"name": "m"}', None])
def test_specs_that_are_not_json_objects_are_compared_as_they_are(spec) -> None:
    assert differing_attrs({"spec": spec}, {"spec": spec}) == []
    assert differing_attrs({"spec": spec}, {"spec": '{"name": "other"}'}) == ["spec"]
