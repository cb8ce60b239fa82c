"""``pathdistill models``: every registry entry and shipped checkpoint, with its contract and weight source."""

from __future__ import annotations

import json

import pytest

from napari_pathdistill.cli.main import main
from napari_pathdistill.errors import ModelLoadError
from napari_pathdistill.models import get_spec, list_models
from napari_pathdistill.models.registry import SHIPPED
from napari_pathdistill.models.spec import ModelSpec


def test_models_lists_registry_and_shipped_checkpoints(capsys) -> None:
    assert main(["models"]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()}
    assert set(lines) == set(list_models())
    hopt = lines["h-optimus-0"]
    assert get_spec("h-optimus-0").arch in hopt and "hf-hub:bioptimus/H-optimus-0" in hopt and "224px" in hopt
    student = lines["pathdistill-student"]  # shipped: its config.json's spec, not a bare folder name
    assert "vit_" in student and "checkpoint " in student and "models/weights/pathdistill-student" in student


def test_models_shows_the_shipped_students_effective_shape(capsys) -> None:
    """The student's arch name says patch14 / ViT-S, its config.json's model_kwargs make it a ViT-Ti/16 of 5 blocks:
    the listing shows the shape the kwargs set, read from the shipped file (not from a built model)."""
    config = json.loads((SHIPPED / "pathdistill-student" / "config.json").read_text())
    kw = config["model_kwargs"]
    assert main(["models"]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()}
    shape = f"[ViT patch{kw['patch_size']} d{kw['embed_dim']} x{kw['depth']} h{kw['num_heads']}]"
    assert f"{config['arch']} {shape}" in lines["pathdistill-student"]
    # registry kwargs that keep the arch's shape: no summary
    assert "[" not in lines["h-optimus-0"].split("cls")[0]


def test_shape_summary_reads_kwargs_only() -> None:
    spec = ModelSpec("s", "vit_small_patch14_reg4_dinov2", {"patch_size": (16, 16), "depth": 5})
    assert spec.shape_summary == "ViT patch16 x5"
    assert ModelSpec("s", "vit_small_patch14_reg4_dinov2", {"img_size": 224}).shape_summary == ""
    assert ModelSpec("c", "tf_efficientnet_lite2", {"depth": 3}, family="cnn").shape_summary == ""


def test_unknown_model_lists_every_name_models_lists() -> None:
    """The error of an unknown name lists the shipped checkpoints too (pathdistill-student was missing)."""
    with pytest.raises(ModelLoadError) as exc:
        get_spec("nomodel")
    known = str(exc.value).split("known: ", 1)[1]
    assert "pathdistill-student" in list_models()
    assert all(f"{name}," in known for name in list_models())
