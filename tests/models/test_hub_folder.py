"""A local copy of a Hugging Face hub model (timm's config.json + model.safetensors or pytorch_model.bin), the
folder ``hf download bioptimus/H0-mini --local-dir DIR`` gives, is chosen like a checkpoint folder.

The folders are written by timm's own ``save_for_hf`` (the format of the hub's timm models) from tiny random
models of the registry's architectures; the real weights cannot be downloaded here.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from timm.models._hub import save_for_hf

from napari_pathdistill.errors import ModelLoadError
from napari_pathdistill.models import load_model
from napari_pathdistill.models.factory import resolve_spec
from napari_pathdistill.models.spec import HOPT_MEAN, IMAGENET_MEAN, ModelSpec, build_module
from napari_pathdistill.models.testing import tiny_spec

#: the replacements timm asks for the layer classes it cannot write to JSON
LAYER_NAMES = {"mlp_layer": "swiglu_packed", "act_layer": "silu"}


class _Planted:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').write('pwned')",))


@pytest.mark.parametrize("safetensors", [True, False])
def test_a_downloaded_h0_mini_folder_loads_with_h0_minis_contract(tmp_path: Path, safetensors: bool) -> None:
    torch.manual_seed(0)
    module = build_module(tiny_spec("h0-mini", tile_px=56))
    save_for_hf(module, str(tmp_path / "H0-mini"), model_args=LAYER_NAMES, safe_serialization=safetensors)
    model = load_model(str(tmp_path / "H0-mini"), device="cpu")
    state = model.module.state_dict()
    assert all(torch.equal(state[k], v) for k, v in module.state_dict().items())
    assert (model.spec.name, model.spec.embedding, model.dim, model.spec.mean) == (
        "h0-mini",
        "cls+mean",
        96,
        HOPT_MEAN,
    )
    assert (resolve_spec(str(tmp_path / "H0-mini")).tile_px, model.spec.mpp) == (
        224,
        0.5,
    )  # the widgets' fields


def test_another_architecture_gets_its_own_normalisation_and_the_cls_token(tmp_path: Path) -> None:
    kwargs = {"img_size": 56, "depth": 2, "embed_dim": 48, "num_heads": 2, "num_classes": 0}
    module = build_module(ModelSpec("x", "vit_small_patch14_reg4_dinov2", kwargs))
    save_for_hf(module, str(tmp_path / "dinov2-s"), safe_serialization=True)
    model = load_model(str(tmp_path / "dinov2-s"), device="cpu")
    assert (model.spec.name, model.spec.embedding, model.dim, model.spec.mean) == (
        "dinov2-s",
        "cls",
        48,
        IMAGENET_MEAN,
    )


def test_a_pickle_with_code_as_pytorch_model_bin_is_refused_unrun(tmp_path: Path) -> None:
    folder, marker = tmp_path / "H0-mini", tmp_path / "marker"
    save_for_hf(build_module(tiny_spec("h0-mini", tile_px=56)), str(folder), model_args=LAYER_NAMES)
    torch.save({"cls_token": _Planted(marker)}, folder / "pytorch_model.bin")
    with pytest.raises(ModelLoadError, match=r"pytorch_model\.bin is not a weights-only torch file"):
        load_model(str(folder), device="cpu")
    assert not marker.exists()
