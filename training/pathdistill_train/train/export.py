"""Export the EMA student as a plugin checkpoint folder (model.safetensors + config.json).

The spec is the plugin's ``ModelSpec`` and the files are written by the plugin's ``save_checkpoint``, so the
export is, by construction, what ``napari_pathdistill.models.load_model(folder)`` reads.

The folder is replaced whole, so its weights and ``config.json`` are always of the same step: both are written
into a hidden sibling ``.export.partial``, which, once complete, is renamed ``.export.new``; then the old
``export`` is renamed ``.export.old``, ``.export.new`` renamed ``export`` and ``.export.old`` removed (POSIX
cannot rename onto a non-empty folder). :func:`recover_export`, run when a run (re)starts, finishes a swap that a
kill interrupted and removes what a killed export left. Only rank 0 writes, so the names are fixed.
"""

from __future__ import annotations

import shutil
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
        folder: checkpoint folder to write (``model.safetensors`` + ``config.json``), replaced as a whole.
        step: optimisation steps run, recorded in ``config.json``.
        run: the run record written with it (see :func:`training_info`).
    """
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    partial, new = _sibling(folder, "partial"), _sibling(folder, "new")
    shutil.rmtree(partial, ignore_errors=True)
    try:
        save_checkpoint(model, student_spec(cfg), partial, training=training_info(cfg, step, run))
        shutil.rmtree(new, ignore_errors=True)
        partial.rename(new)  # complete: from here on a restart finishes the swap (recover_export)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    _swap_in(folder)
    return folder


def _sibling(folder: Path, kind: str) -> Path:
    """``.export.partial`` / ``.export.new`` / ``.export.old`` beside ``export``."""
    return folder.with_name(f".{folder.name}.{kind}")


def _swap_in(folder: Path) -> None:
    """Replace ``folder`` by its complete ``.new`` sibling: old -> ``.old``, ``.new`` -> ``folder``, drop ``.old``."""
    new, old = _sibling(folder, "new"), _sibling(folder, "old")
    if folder.exists():
        shutil.rmtree(old, ignore_errors=True)
        folder.rename(old)
    new.rename(folder)
    shutil.rmtree(old, ignore_errors=True)


def recover_export(folder: Path) -> list[str]:
    """Finish an export swap a kill interrupted and remove the leftovers of a killed export (rank 0, at start).

    A complete ``.export.new`` (written after its checkpoint) becomes ``export``; ``.export.old`` is restored
    when neither exists (else removed); ``.export.partial`` (a killed write) is removed.

    Returns:
        What was done, one short phrase per folder (empty: nothing left over).
    """
    folder = Path(folder)
    new, old, done = _sibling(folder, "new"), _sibling(folder, "old"), []
    if new.is_dir():
        _swap_in(folder)
        done.append(f"{folder.name}/ completed from {new.name}")
    elif old.is_dir() and not folder.exists():
        old.rename(folder)
        done.append(f"{folder.name}/ restored from {old.name}")
    elif old.is_dir():
        shutil.rmtree(old)
        done.append(f"removed {old.name}")
    partial = _sibling(folder, "partial")
    if partial.is_dir():
        shutil.rmtree(partial)
        done.append(f"removed {partial.name}")
    return done
