"""Fixtures of the inference tests."""

from __future__ import annotations

import dataclasses

import pytest

from napari_pathdistill.models import load_model
from napari_pathdistill.models.checkpoint import save_checkpoint
from napari_pathdistill.models.testing import tiny_model


@pytest.fixture(scope="module")
def model_112px_1um(tmp_path_factory):
    """A tiny ViT loaded from a checkpoint whose spec says 112 px tiles at 1 um/px (not the 224 px at 0.5 um/px
    of the registry models), to see the core take tile px and um/px from the model."""
    tiny = tiny_model("vit", tile_px=112)
    spec = dataclasses.replace(tiny.spec, mpp=1.0)
    return load_model(
        str(save_checkpoint(tiny.module, spec, tmp_path_factory.mktemp("ckpt112"))), device="cpu"
    )


@pytest.fixture(scope="module")
def tiny_vit_2um():
    """The tiny ViT (56 px tiles) with a spec of 2 um/px: 112 um tiles, 16 on the 500 um OS-2 field."""
    tiny = tiny_model("vit")
    tiny.spec = dataclasses.replace(tiny.spec, mpp=2.0)
    return tiny


@pytest.fixture(scope="module")
def saved_tiny_vit(tmp_path_factory):
    """The tiny ViT saved as a checkpoint and loaded back on the CPU, as the CLI's workers load a model."""
    tiny = tiny_model("vit")
    return load_model(str(save_checkpoint(tiny.module, tiny.spec, tmp_path_factory.mktemp("ckpt"))), "cpu")
