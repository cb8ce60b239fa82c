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
WEIGHTS = "model.safetensors"
#: suffixes of torch pickle files (a training run's checkpoint.pth, a torch.save state dict): never opened here
PICKLE_SUFFIXES = (".pth", ".pt", ".ckpt", ".bin", ".pkl", ".pickle")
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
    with atomic_path(out / WEIGHTS) as tmp:
        save_file(state, str(tmp))
    atomic_write_text(out / "config.json", json.dumps(config, indent=2))
    return out


def locate(path: str | Path) -> tuple[Path, Path]:
    """The folder holding ``config.json`` and the weights file a chosen path names.

    Accepts a checkpoint folder, its ``model.safetensors`` (or another ``.safetensors`` file beside its
    ``config.json``: that file is loaded), its ``config.json``, or a ``pathdistill-train`` run folder (its
    ``export/`` folder). Nothing else is opened: a torch pickle (a run's ``checkpoint.pth``) is refused by name.

    Raises:
        ModelLoadError: the path does not exist or is not one of these; the message names the run's export
            folder when the path lies in a run folder.
    """
    p = Path(path).expanduser()
    export = (p if p.is_dir() else p.parent) / "export"
    hint = (
        f"; this training run's model is its export folder {export}"
        if (export / "config.json").is_file()
        else ""
    )
    if p.is_dir():
        if (p / "config.json").is_file():
            return p, p / WEIGHTS
        if hint:
            return export, export / WEIGHTS
        raise ModelLoadError(
            f"{p} is not a checkpoint folder: it has no config.json (a checkpoint folder holds {WEIGHTS} + "
            "config.json; a pathdistill-train run's model is in its export/ folder)."
        )
    if not p.exists():
        raise ModelLoadError(f"Checkpoint {p} does not exist.")
    if p.suffix == ".safetensors":
        return p.parent, p
    if p.name == "config.json":
        return p.parent, p.parent / WEIGHTS
    if p.suffix in PICKLE_SUFFIXES:
        raise ModelLoadError(
            f"{p} is a torch pickle file (e.g. a training run's checkpoint.pth), not opened: models load from "
            f"safetensors only; choose a checkpoint folder ({WEIGHTS} + config.json){hint}."
        )
    raise ModelLoadError(
        f"{p} is not a model: choose a checkpoint folder, its {WEIGHTS} or its config.json{hint}."
    )


def read_spec(folder: str | Path) -> ModelSpec:
    """The :class:`ModelSpec` of a checkpoint (any path :func:`locate` accepts), from its ``config.json``."""
    folder, weights = locate(folder)
    cfg_path = folder / "config.json"
    try:
        cfg = json.loads(cfg_path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelLoadError(
            f"{cfg_path} is missing or not JSON: a checkpoint folder needs the config.json its export wrote "
            "(architecture, normalisation, tile size) beside the weights."
        ) from exc
    if cfg.get("format") != FORMAT:
        raise ModelLoadError(f"{cfg_path}: format {cfg.get('format')!r} is not {FORMAT!r}.")
    missing = [k for k in ("name", "arch") if k not in cfg]
    if missing:
        raise ModelLoadError(f"{cfg_path} lacks {', '.join(missing)}: cannot build the model.")
    kw = {k: cfg[k] for k in SPEC_KEYS if k in cfg}
    kw["mean"], kw["std"] = tuple(kw.get("mean", DEFAULT_MEAN)), tuple(kw.get("std", DEFAULT_STD))
    return ModelSpec(**kw, weights=str(weights))


def load_checkpoint(path: str | Path) -> tuple[ModelSpec, torch.nn.Module]:
    """Spec and module (weights loaded, strict) of any checkpoint path :func:`locate` accepts."""
    spec = read_spec(path)
    module = build_module(spec)
    try:
        module.load_state_dict(load_file(Path(str(spec.weights))), strict=True)
    except Exception as exc:
        raise ModelLoadError(
            f"Weights in {spec.weights} do not fit {spec.arch} {spec.model_kwargs}: {exc}"
        ) from exc
    return spec, module
