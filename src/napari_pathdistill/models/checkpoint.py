"""Checkpoint folders: ``model.safetensors`` (timm state dict) + ``config.json`` (ModelSpec + training info).

The one writer and reader of the format, for the plugin and the training package's export alike. A
``config.json`` without ``mean``/``std`` gets ``spec.DEFAULT_MEAN``/``DEFAULT_STD``, as a ``ModelSpec`` does.
"""

from __future__ import annotations

import json
import pickle
import re
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from napari_pathdistill.atomic import atomic_path, atomic_write_text
from napari_pathdistill.errors import ModelLoadError
from napari_pathdistill.models.spec import DEFAULT_MEAN, DEFAULT_STD, ModelSpec, build_module
from napari_pathdistill.models.torch_file import DamagedTorchFile, load_checked

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
    return spec, build_with_weights(spec)


def build_with_weights(spec: ModelSpec) -> torch.nn.Module:
    """The module of ``spec`` holding the tensors of its local weights file ``spec.weights`` (strict).

    The file is read with safetensors, or with ``torch.load(weights_only=True)`` for a Hugging Face download's
    ``pytorch_model.bin`` (``models.hub_folder``); no pickled object is ever built.

    Raises:
        ModelLoadError: one line naming the file and what does not fit (see :func:`mismatch`), or a weights
            file that is missing, truncated or not a weights-only file.
    """
    weights = Path(str(spec.weights))
    state = _read_weights(weights)
    module = build_module(spec)
    why = mismatch(state, module.state_dict())
    if why:
        arch = f"{spec.arch} [{spec.shape_summary}]" if spec.shape_summary else spec.arch
        raise ModelLoadError(f"{weights} does not fit its config.json ({arch}): {why}.")
    module.load_state_dict(state, strict=True)
    return module


def _read_weights(weights: Path) -> dict[str, torch.Tensor]:
    try:
        if weights.suffix == ".safetensors":
            return load_file(weights)
        return load_checked(weights)
    except DamagedTorchFile as exc:
        raise ModelLoadError(f"{exc}; copy or download it again.") from exc
    except FileNotFoundError as exc:
        raise ModelLoadError(
            f"{weights} is missing: the checkpoint folder has config.json but no weights."
        ) from exc
    except (SafetensorError, OSError, EOFError) as exc:
        raise ModelLoadError(
            f"{weights} is not a complete safetensors file ({exc}): it is truncated or another format; "
            "copy or export it again."
        ) from exc
    except (pickle.UnpicklingError, RuntimeError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ModelLoadError(
            f"{weights} is not a weights-only torch file ({reason}): only tensors are read, never pickled objects."
        ) from exc


def mismatch(state: Mapping[str, torch.Tensor], wanted: Mapping[str, torch.Tensor]) -> str:
    """What keeps ``state`` (a file's tensors) from loading strictly into ``wanted`` (a module's); "" if nothing.

    Says the ViT shape of each side when it can be read (width, blocks, patch), then counts and examples of the
    tensors of other shapes, missing and unexpected ones.
    """
    shapes = [k for k in wanted if k in state and state[k].shape != wanted[k].shape]
    missing = [k for k in wanted if k not in state]
    extra = [k for k in state if k not in wanted]
    if not (shapes or missing or extra):
        return ""
    have, want = _shape(state), _shape(wanted)
    parts = [f"the file holds {have}, config.json builds {want}"] if have != want else []
    if shapes:
        k = shapes[0]
        parts.append(f"{len(shapes)} tensors of another shape (e.g. {k}: file {tuple(state[k].shape)}, "
                     f"model {tuple(wanted[k].shape)})")  # fmt: skip
    for keys, what in ((missing, "missing from the file"), (extra, "not in the model")):
        if keys:
            parts.append(f"{len(keys)} tensors {what} (e.g. {', '.join(keys[:3])})")
    return "; ".join(parts)


def _shape(tensors: Mapping[str, torch.Tensor]) -> str:
    """The shape of a timm ViT's tensors (e.g. ``a ViT of width 32, 2 blocks, patch 14``), else their count."""
    if "cls_token" not in tensors or "patch_embed.proj.weight" not in tensors:
        return f"{len(tensors)} tensors, no ViT (first: {next(iter(tensors), 'none')})"
    blocks = {int(m.group(1)) for k in tensors if (m := re.match(r"blocks\.(\d+)\.", k))}
    patch = tuple(tensors["patch_embed.proj.weight"].shape[-2:])
    return f"a ViT of width {tensors['cls_token'].shape[-1]}, {len(blocks)} blocks, patch {patch[0]}"
