"""A local copy of a Hugging Face hub model in timm's format: ``config.json`` (``architecture``,
``pretrained_cfg``, optional ``model_args``) and ``model.safetensors`` or ``pytorch_model.bin``.

That is what ``hf download bioptimus/H0-mini --local-dir H0-mini`` (or the hub's "Files" page) gives on a
machine with internet; copied to one without, the folder is chosen like a checkpoint folder. A registry entry of
the same timm architecture lends its contract (``h0-mini``: SwiGLUPacked MLP, CLS ++ mean patch token,
H-optimus-0's mean/std, 224 px at 0.5 um/px; the first entry of that architecture), with the folder's
``model_args`` over its kwargs; any other architecture gets its ``pretrained_cfg`` mean/std and input size and
the CLS token (ViTs) or the global pool. ``pytorch_model.bin`` (H-optimus-0 ships one)
is read with ``torch.load(weights_only=True)`` only.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from napari_pathdistill.errors import ModelLoadError
from napari_pathdistill.models.registry import _registry
from napari_pathdistill.models.spec import DEFAULT_MEAN, DEFAULT_STD, ModelSpec

#: the weights files of a hub folder, in the order they are looked for (timm's preference)
HUB_WEIGHTS = ("model.safetensors", "pytorch_model.bin")
_VIT_PREFIXES = ("vit", "deit", "eva", "beit", "flexivit", "samvit")


def hub_config(folder: Path) -> dict[str, Any] | None:
    """The folder's ``config.json`` when it is a timm hub config (it names an ``architecture``), else None."""
    try:
        cfg = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(cfg, dict) or "format" in cfg or not isinstance(cfg.get("architecture"), str):
        return None
    return cfg


def hub_folder_spec(folder: Path, cfg: dict[str, Any]) -> ModelSpec:
    """The :class:`ModelSpec` of a timm hub folder (``cfg`` = :func:`hub_config`), weights = its weights file.

    Raises:
        ModelLoadError: the folder holds neither ``model.safetensors`` nor ``pytorch_model.bin``.
    """
    weights = next((folder / n for n in HUB_WEIGHTS if (folder / n).is_file()), None)
    if weights is None:
        raise ModelLoadError(
            f"{folder} holds a Hugging Face config.json but no weights ({' or '.join(HUB_WEIGHTS)}): copy the "
            "whole downloaded folder."
        )
    arch = cfg["architecture"].removeprefix("timm/")
    args = {**(cfg.get("model_args") or {}), "num_classes": 0}
    base = next((s for s in _registry().values() if s.arch == arch.split(".")[0]), None)
    if base is not None:  # the registry's normalisation and tiles (checked against the model cards)
        return dataclasses.replace(base, model_kwargs={**base.model_kwargs, **args}, weights=str(weights))
    pcfg = cfg.get("pretrained_cfg") or {}
    vit = arch.startswith(_VIT_PREFIXES)
    return ModelSpec(
        folder.name,
        arch,
        args,
        tuple(pcfg.get("mean") or DEFAULT_MEAN),
        tuple(pcfg.get("std") or DEFAULT_STD),
        tile_px=int((pcfg.get("input_size") or [224])[-1]),
        embedding="cls" if vit else "pool",
        weights=str(weights),
        family="vit" if vit else "cnn",
    )
