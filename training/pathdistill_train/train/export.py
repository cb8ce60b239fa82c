"""Export the EMA student as a plugin checkpoint folder (model.safetensors + config.json)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf
from safetensors.torch import save_file
from torch import nn

FORMAT = "pathdistill-checkpoint/1"


def checkpoint_config(cfg: Any, step: int) -> dict[str, Any]:
    """The ``config.json`` content for the student of ``cfg`` after ``step`` steps."""
    kwargs = OmegaConf.to_container(cfg.student.model_kwargs, resolve=True)
    teachers = [cfg.teacher.name or cfg.teacher.arch] + [t.name or t.arch for t in cfg.teacher.extra]
    return {
        "format": FORMAT,
        "name": cfg.student.name,
        "arch": cfg.student.arch,
        "model_kwargs": kwargs,
        "mean": list(cfg.student.mean),
        "std": list(cfg.student.std),
        "tile_px": cfg.crops.global_size,
        "mpp": cfg.data.mpp * (cfg.crossmag.factor if cfg.crossmag.enabled else 1),
        "embedding": cfg.student.embedding,
        "family": "vit",
        "training": {
            "teacher": "+".join(teachers),
            "steps": step,
            "config": OmegaConf.to_container(cfg, resolve=True),
        },
    }


def export_student(model: nn.Module, cfg: Any, folder: Path, step: int) -> Path:
    """Write ``model``'s (the timm EMA student's) weights and config; atomic per file.

    Uses ``napari_pathdistill.models.checkpoint.save_checkpoint`` when the core provides it, else writes
    the same format (docs/architecture.md) directly.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    conf = checkpoint_config(cfg, step)
    try:
        from napari_pathdistill.models.checkpoint import save_checkpoint
        from napari_pathdistill.models.registry import ModelSpec
    except ImportError:
        save_checkpoint = None
    if save_checkpoint is not None:
        keys = ("name", "arch", "model_kwargs", "mean", "std", "tile_px", "mpp", "embedding", "family")
        spec = ModelSpec(**{k: (tuple(conf[k]) if k in ("mean", "std") else conf[k]) for k in keys})
        save_checkpoint(model, spec, folder, training=conf["training"])
        return folder
    state = {k: v.detach().float().cpu().contiguous() for k, v in model.state_dict().items()}
    tmp = folder / "model.safetensors.tmp"
    save_file(state, str(tmp), metadata={"format": FORMAT})
    tmp.replace(folder / "model.safetensors")
    _write_json(folder / "config.json", conf)
    return folder


def _write_json(path: Path, obj: dict[str, Any]) -> None:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(obj, indent=2))
    tmp.replace(path)
