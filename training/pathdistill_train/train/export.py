"""Export the EMA student as a plugin checkpoint folder (model.safetensors + config.json).

The spec is the plugin's ``ModelSpec`` and the files are written by the plugin's ``save_checkpoint``, so the
export is, by construction, what ``napari_pathdistill.models.load_model(folder)`` reads.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import OmegaConf
from torch import nn

from napari_pathdistill.models.checkpoint import save_checkpoint
from napari_pathdistill.models.spec import ModelSpec
from pathdistill_train.errors import TrainConfigError


def student_spec(cfg: Any) -> ModelSpec:
    """The plugin's :class:`ModelSpec` of the student of ``cfg`` (kwargs kept as JSON, layer names included).

    ``tile_px`` is the global view side; ``mpp`` is ``data.mpp``, times ``crossmag.factor`` in XMAG mode (the
    student sees the whole field at that lower resolution).
    """
    kwargs = OmegaConf.to_container(cfg.student.model_kwargs, resolve=True)
    if not isinstance(kwargs, dict):
        raise TrainConfigError(f"student.model_kwargs must be a mapping, got {kwargs!r}")
    return ModelSpec(
        name=cfg.student.name,
        arch=cfg.student.arch,
        model_kwargs=kwargs,
        mean=tuple(cfg.student.mean),
        std=tuple(cfg.student.std),
        tile_px=cfg.crops.global_size,
        mpp=cfg.data.mpp * (cfg.crossmag.factor if cfg.crossmag.enabled else 1),
        embedding=cfg.student.embedding,
        family="vit",
    )


def training_info(cfg: Any, step: int, run: dict[str, Any] | None = None) -> dict[str, Any]:
    """The ``training`` entry of ``config.json``: teacher name(s), steps run, the run record, the resolved config.

    Args:
        cfg: the training config.
        step: optimisation steps run.
        run: the record of the run (command, times, data, version, final loss; see ``train.run_record``).
    """
    teachers = [cfg.teacher.name or cfg.teacher.arch] + [t.name or t.arch for t in cfg.teacher.extra]
    return {
        "teacher": "+".join(teachers),
        "steps": step,
        **(run or {}),
        "config": OmegaConf.to_container(cfg, resolve=True),
    }


def export_student(
    model: nn.Module, cfg: Any, folder: Path, step: int, run: dict[str, Any] | None = None
) -> Path:
    """Write ``model`` (the timm EMA student) and its spec with the plugin's ``save_checkpoint``.

    Args:
        model: the timm module of the EMA student (``TokenEncoder.model``).
        cfg: the training config.
        folder: checkpoint folder to write (``model.safetensors`` + ``config.json``, atomic per file).
        step: optimisation steps run, recorded in ``config.json``.
        run: the run record written with it (see :func:`training_info`).
    """
    return save_checkpoint(model, student_spec(cfg), Path(folder), training=training_info(cfg, step, run))
