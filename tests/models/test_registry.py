"""Registry contracts: full-size architectures (on the meta device), tiny builds of the exact specs, hub errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from timm.layers import GluMlp

from napari_pathdistill.errors import ModelLoadError
from napari_pathdistill.models import get_spec, load_model
from napari_pathdistill.models.registry import _registry
from napari_pathdistill.models.spec import IMAGENET_MEAN, ModelSpec, build_module
from napari_pathdistill.models.testing import TINY_VIT, tiny_model, tiny_spec

# name: (width, prefix tokens, depth, patch, SwiGLUPacked MLP, embedding dim, parameters in millions)
CONTRACTS = {
    "h-optimus-0": (1536, 5, 40, 14, True, 1536, 1134.8),
    "h0-mini": (768, 5, 12, 14, True, 1536, 85.7),
    "h0-mini-cls": (768, 5, 12, 14, True, 768, 85.7),
    "uni": (1024, 1, 24, 16, False, 1024, 303.4),
    "uni2-h": (1536, 9, 24, 14, True, 1536, 681.4),
}
VITS = sorted(CONTRACTS)


def _is_swiglu_packed(block: torch.nn.Module) -> bool:
    mlp = block.mlp
    return isinstance(mlp, GluMlp) and isinstance(mlp.act, torch.nn.SiLU) and not mlp.gate_last


def test_every_registry_vit_has_a_contract():
    assert set(VITS) == {n for n, s in _registry().items() if s.family == "vit"}


@pytest.mark.parametrize("name", VITS)
def test_full_size_architecture_matches_the_published_contract(name):
    width, prefix, depth, patch, swiglu, _dim, params_m = CONTRACTS[name]
    with torch.device("meta"):  # shapes only: no 4 GB allocation for the 1.1 B-parameter H-optimus-0
        module = build_module(get_spec(name))
    assert module.num_features == width and module.num_prefix_tokens == prefix and len(module.blocks) == depth
    assert module.patch_embed.patch_size == (patch, patch) and _is_swiglu_packed(module.blocks[0]) == swiglu
    assert sum(p.numel() for p in module.parameters()) / 1e6 == pytest.approx(params_m, abs=0.1)
    assert module.blocks[0].ls1.gamma.shape == (width,)  # LayerScale (init_values 1e-5) present


def test_registry_normalisation_and_sources():
    assert get_spec("uni").mean == IMAGENET_MEAN and get_spec("uni2-h").mean == IMAGENET_MEAN
    assert get_spec("h0-mini").mean == get_spec("h-optimus-0").mean == (0.707223, 0.578729, 0.703617)
    assert get_spec("h0-mini-cls").embedding == "cls" and get_spec("h0-mini").embedding == "cls+mean"
    assert get_spec("uni2-h").weights == "hf-hub:MahmoodLab/UNI2-h"
    assert all(get_spec(n).tile_px == 224 and get_spec(n).mpp == 0.5 for n in VITS)


@pytest.mark.parametrize("name", VITS)
def test_tiny_model_keeps_the_registry_contract(name):
    _width, prefix, _depth, patch, swiglu, _dim, _ = CONTRACTS[name]
    spec, tile_px = get_spec(name), 4 * patch
    tiny = tiny_spec(name, tile_px=tile_px)
    changed = {k for k in tiny.model_kwargs if tiny.model_kwargs[k] != spec.model_kwargs.get(k)}
    assert changed <= {*TINY_VIT, "img_size"} and tiny.arch == spec.arch and tiny.embedding == spec.embedding
    model = tiny_model(name, tile_px=tile_px)
    assert model.num_prefix_tokens == prefix and _is_swiglu_packed(model.module.blocks[0]) == swiglu
    assert model.dim == TINY_VIT["embed_dim"] * (2 if spec.embedding == "cls+mean" else 1)
    tiles = np.random.default_rng(0).integers(0, 256, (2, tile_px, tile_px, 3), dtype=np.uint8)
    tokens = model.forward_tokens(model.preprocess(tiles))
    assert tokens.shape == (2, prefix + 16, TINY_VIT["embed_dim"])
    emb = model.embed(tiles)
    assert emb.shape == (2, model.dim) and emb.dtype == np.float32
    np.testing.assert_array_equal(emb[:, : TINY_VIT["embed_dim"]], tokens[:, 0].detach().numpy())
    if spec.embedding == "cls+mean":  # CLS, then the mean of the patch tokens only (registers excluded)
        np.testing.assert_allclose(
            emb[:, TINY_VIT["embed_dim"] :], tokens[:, prefix:].mean(1).detach().numpy()
        )


@pytest.mark.parametrize(("source", "repo"), [("uni2-h", "MahmoodLab/UNI2-h"), ("hf-hub:bioptimus/H0-mini", "bioptimus/H0-mini")])  # fmt: skip
def test_hub_weights_offline_raise_a_fast_clear_error(source, repo, monkeypatch, created):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ModelLoadError) as err:
        load_model(source, device="cpu")
    assert created == []  # no hub download (network retries), no random init of the model (ViT-H/g)
    msg = str(err.value)
    assert f"https://huggingface.co/{repo}" in msg and "~/.cache/huggingface/hub" in msg
    assert "HF_HUB_OFFLINE" in msg and "checkpoint folder" in msg


def test_random_init_of_a_registry_entry_needs_no_weights():
    model = load_model("h0-mini", device="cpu", pretrained=False)
    assert model.dim == 1536 and model.num_prefix_tokens == 5 and model.amp_dtype == torch.float32


def test_resolve_spec_is_the_spec_load_model_uses(tmp_path):
    from napari_pathdistill.models.checkpoint import save_checkpoint
    from napari_pathdistill.models.factory import resolve_spec

    assert resolve_spec("h0-mini") == get_spec("h0-mini")
    assert resolve_spec("pathdistill-student") == load_model("pathdistill-student", "cpu").spec
    tiny = tiny_model("vit", tile_px=42)
    folder = save_checkpoint(tiny.module, tiny.spec, tmp_path / "ckpt")
    for source in (folder, folder / "model.safetensors"):
        assert resolve_spec(str(source)) == load_model(str(source), "cpu").spec
    with pytest.raises(ModelLoadError, match="Unknown model"):
        resolve_spec("no-such-model")
    with pytest.raises(ModelLoadError, match="hub id"):
        resolve_spec("hf-hub:org/name")


def test_every_listed_name_has_a_spec():
    """get_spec of a shipped checkpoint's name (listed by list_models and in get_spec's own 'known:' list) is
    its spec, the one load_model uses, not 'Unknown model'; the trainer's teacher.name and tiny_spec use it."""
    from napari_pathdistill.models import list_models
    from napari_pathdistill.models.factory import resolve_spec

    assert "pathdistill-student" in list_models()
    for name in list_models():
        assert get_spec(name) == resolve_spec(name)
    spec = get_spec("pathdistill-student")
    assert spec.model_kwargs["embed_dim"] == 192 and spec.weights.endswith("model.safetensors")
    assert tiny_spec("pathdistill-student").model_kwargs["depth"] == TINY_VIT["depth"]


@pytest.mark.parametrize(
    ("arch", "kwargs", "family", "patch"),
    [
        ("vit_giant_patch14_reg4_dinov2", {}, "vit", 14),
        ("vit_base_patch14_reg4_dinov2", {"patch_size": 16}, "vit", 16),
        ("vit_small_patch16_224", {"patch_size": [8, 8]}, "vit", 8),
        ("hf-hub:org/some-vit", {}, "vit", None),
        ("tf_efficientnet_lite2", {}, "cnn", None),
    ],
)
def test_patch_size_is_read_without_building_the_model(arch, kwargs, family, patch):
    assert ModelSpec("m", arch, model_kwargs=kwargs, family=family).patch_size == patch
