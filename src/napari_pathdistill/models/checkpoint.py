"""Checkpoint folders: ``model.safetensors`` (timm state dict) + ``config.json`` (ModelSpec + training info).

The one writer and reader of the format, for the plugin and the training package's export alike. A
``config.json`` without ``mean``/``std`` gets ``spec.DEFAULT_MEAN``/``DEFAULT_STD``, as a ``ModelSpec`` does.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from napari_pathdistill.atomic import atomic_path, atomic_write_text
from napari_pathdistill.errors import ModelLoadError
from napari_pathdistill.models.spec import DEFAULT_MEAN, DEFAULT_STD, ModelSpec, build_module

FORMAT = "pathdistill-checkpoint/1"
SPEC_KEYS = ("name", "arch", "model_kwargs", "mean", "std", "tile_px", "mpp", "embedding", "family")


def save_checkpoint(
    module: torch.nn.Module, spec: ModelSpec, folder: str | Path, training: dict | None = None
) -> Path:
    """Write ``folder/model.safetensors`` and ``folder/config.json`` atomically (temporary files + rename)."""
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    config = {
        "format": FORMAT,
        **{k: v for k, v in asdict(spec).items() if k in SPEC_KEYS},
        "training": training or {},
    }
    state = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
    with atomic_path(out / "model.safetensors") as tmp:
        save_file(state, str(tmp))
    atomic_write_text(out / "config.json", json.dumps(config, indent=2))
    return out


def read_spec(folder: str | Path) -> ModelSpec:
    """The :class:`ModelSpec` stored in a checkpoint folder's ``config.json``."""
    cfg_path = Path(folder) / "config.json"
    try:
        cfg = json.loads(cfg_path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelLoadError(
            f"{cfg_path} is missing or not JSON: a checkpoint folder needs config.json."
        ) from exc
    if cfg.get("format") != FORMAT:
        raise ModelLoadError(f"{cfg_path}: format {cfg.get('format')!r} is not {FORMAT!r}.")
    missing = [k for k in ("name", "arch") if k not in cfg]
    if missing:
        raise ModelLoadError(f"{cfg_path} lacks {', '.join(missing)}: cannot build the model.")
    kw = {k: cfg[k] for k in SPEC_KEYS if k in cfg}
    kw["mean"], kw["std"] = tuple(kw.get("mean", DEFAULT_MEAN)), tuple(kw.get("std", DEFAULT_STD))
    return ModelSpec(**kw, weights=str(Path(folder) / "model.safetensors"))


def load_checkpoint(path: str | Path) -> tuple[ModelSpec, torch.nn.Module]:
    """Spec and module (weights loaded, strict) of a checkpoint folder, or of its ``model.safetensors`` file."""
    folder = Path(path)
    folder = folder.parent if folder.is_file() else folder
    spec = read_spec(folder)
    module = build_module(spec)
    try:
        module.load_state_dict(load_file(folder / "model.safetensors"), strict=True)
    except Exception as exc:
        raise ModelLoadError(
            f"Weights in {folder} do not fit {spec.arch} {spec.model_kwargs}: {exc}"
        ) from exc
    return spec, module
