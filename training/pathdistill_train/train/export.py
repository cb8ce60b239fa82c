"""Export the EMA student as a plugin checkpoint folder (model.safetensors + config.json)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import OmegaConf
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
    """Write ``model``'s (the timm EMA student's) weights and config through the plugin's
    ``models.checkpoint.save_checkpoint`` (safetensors + config.json, atomic per file)."""
    from napari_pathdistill.models.checkpoint import save_checkpoint
    from napari_pathdistill.models.registry import ModelSpec

    conf = checkpoint_config(cfg, step)
    spec = ModelSpec(
        name=conf["name"],
        arch=conf["arch"],
        model_kwargs=conf["model_kwargs"],
        mean=tuple(conf["mean"]),
        std=tuple(conf["std"]),
        tile_px=conf["tile_px"],
        mpp=conf["mpp"],
        embedding=conf["embedding"],
        family=conf["family"],
    )
    save_checkpoint(model, spec, Path(folder), training=conf["training"])
    return Path(folder)
