"""``pathdistill models``: every registry entry and shipped checkpoint, with its contract and weight source."""

from __future__ import annotations

import pytest

from napari_pathdistill.cli.main import main
from napari_pathdistill.errors import ModelLoadError
from napari_pathdistill.models import get_spec, list_models


def test_models_lists_registry_and_shipped_checkpoints(capsys) -> None:
    assert main(["models"]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()}
    assert set(lines) == set(list_models())
    hopt = lines["h-optimus-0"]
    assert get_spec("h-optimus-0").arch in hopt and "hf-hub:bioptimus/H-optimus-0" in hopt and "224px" in hopt
    student = lines["pathdistill-student"]  # shipped: its config.json's spec, not a bare folder name
    assert "vit_" in student and "checkpoint " in student and "models/weights/pathdistill-student" in student


def test_unknown_model_lists_every_name_models_lists() -> None:
    """The error of an unknown name lists the shipped checkpoints too (pathdistill-student was missing)."""
    with pytest.raises(ModelLoadError) as exc:
        get_spec("nomodel")
    known = str(exc.value).split("known: ", 1)[1]
    assert "pathdistill-student" in list_models()
    assert all(f"{name}," in known for name in list_models())
