"""Local teacher weights (teacher.weights=FILE): they load exactly, and a file that does not fit is refused."""

from __future__ import annotations

from pathlib import Path

import pytest
import timm
import torch

from pathdistill_train.config import load_config
from pathdistill_train.errors import TrainConfigError
from pathdistill_train.models.build import build_teacher

TINY = {"img_size": 56, "embed_dim": 48, "depth": 2, "num_heads": 2}


def _teacher_file(tmp_path: Path, prefix: str = "") -> tuple[Path, dict]:
    """A weights-only .bin of the H-optimus-0 architecture at tiny width, like the hub's pytorch_model.bin."""
    torch.manual_seed(0)
    model = timm.create_model("vit_giant_patch14_reg4_dinov2", num_classes=0, init_values=1e-5, **TINY)
    sd = model.state_dict()
    path = tmp_path / "pytorch_model.bin"
    torch.save({prefix + k: v for k, v in sd.items()}, path)
    return path, sd


def _cfg(path: Path):
    kw = [f"teacher.model_kwargs.{k}={v}" for k, v in TINY.items()]
    return load_config("h0mini_from_hoptimus0", ["teacher.arch=null", f"teacher.weights={path}", *kw]).teacher


def test_local_hoptimus_weights_load_exactly(tmp_path: Path) -> None:
    path, sd = _teacher_file(tmp_path)
    teacher = build_teacher(_cfg(path))
    loaded = teacher.model.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in sd.items())
    assert teacher.model.__class__.__name__ == "VisionTransformer" and teacher.model.num_prefix_tokens == 5


def test_weights_with_foreign_keys_are_refused(tmp_path: Path) -> None:
    path, _ = _teacher_file(tmp_path, prefix="module.")  # e.g. saved from a DDP wrapper
    with pytest.raises(TrainConfigError, match="do not fit"):
        build_teacher(_cfg(path))
