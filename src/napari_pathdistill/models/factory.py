"""``load_model``: a ready :class:`EmbeddingModel` from a registry name, a checkpoint folder or an hf-hub id.

Puts together the registry table (``models.registry``), the weight loaders (``models.pretrained``) and the
checkpoint format (``models.checkpoint``), all built on the contract in ``models.spec``.
"""

from __future__ import annotations

from pathlib import Path

import torch

from napari_pathdistill.device import resolve_device
from napari_pathdistill.errors import ModelLoadError
from napari_pathdistill.models.checkpoint import build_with_weights, locate, read_spec
from napari_pathdistill.models.embedding_model import EmbeddingModel
from napari_pathdistill.models.hub_folder import hub_config, hub_folder_spec
from napari_pathdistill.models.pretrained import hub_module, load_weights
from napari_pathdistill.models.registry import SHIPPED, get_spec
from napari_pathdistill.models.spec import ModelSpec, build_module


def load_model(
    name_or_path: str, device: str = "auto", *, pretrained: bool = True, amp: str = "auto"
) -> EmbeddingModel:
    """A ready :class:`EmbeddingModel` from a registry name, a checkpoint folder/file or an ``hf-hub:`` id.

    ``pathdistill-student`` resolves to the checkpoint shipped in ``models/weights/pathdistill-student`` when
    present. Registry entries whose weights live on the hub are created by timm from the hub (no random
    initialisation first). The hub repo of a registry entry's weights (``bioptimus/H0-mini``, with or without
    ``hf-hub:``) gets that entry's spec; any other ``hf-hub:`` id the CLS embedding and
    ``spec.DEFAULT_MEAN``/``DEFAULT_STD``.
    Raises :class:`ModelLoadError` with what to do when anything is missing.

    Args:
        name_or_path: registry name, ``hf-hub:org/name``, or a checkpoint: its folder, its ``model.safetensors``
            (or another ``.safetensors`` beside its ``config.json``), its ``config.json``, or a training run
            folder (its ``export/``), see ``checkpoint.locate``; or a local copy of a Hugging Face hub model
            (``config.json`` in timm's format + ``model.safetensors`` / ``pytorch_model.bin``, see
            ``models.hub_folder``).
        device: "auto" (CUDA, else MPS, else CPU), "cpu", "cuda", "cuda:1", ...
        pretrained: load the weights (False: random initialisation of the registry architecture).
        amp: autocast dtype of :meth:`EmbeddingModel.embed`: "auto" (bfloat16 on CUDA, float32 elsewhere),
            "bf16", "fp16" or "fp32".
    """
    path = checkpoint_path(name_or_path)
    if path is not None:
        spec = checkpoint_spec(path)
        module = build_with_weights(spec)
    elif name_or_path.startswith("hf-hub:") and not _registry_hub_id(name_or_path):
        spec = ModelSpec(name_or_path, name_or_path, {"num_classes": 0}, weights=name_or_path)
        module = hub_module(spec)
    else:
        spec = get_spec(name_or_path)
        module = _registry_module(spec, pretrained)
    return EmbeddingModel(spec, module, resolve_device(device), amp=amp)


def checkpoint_path(name_or_path: str) -> Path | None:
    """The checkpoint folder/file ``name_or_path`` names (a path, or a checkpoint shipped in ``SHIPPED``), else None."""
    path = Path(name_or_path).expanduser()
    if not path.exists() and (SHIPPED / name_or_path / "config.json").is_file():
        path = SHIPPED / name_or_path
    return path if path.exists() else None


def resolve_spec(name_or_path: str) -> ModelSpec:
    """The :class:`ModelSpec` ``load_model(name_or_path)`` would use, without building the model.

    Raises:
        ModelLoadError: unknown name, unreadable checkpoint ``config.json``, or an ``hf-hub:`` id (its spec is
            only known once timm has its config).
    """
    path = checkpoint_path(name_or_path)
    if path is not None:
        return checkpoint_spec(path)
    if name_or_path.startswith("hf-hub:") and not _registry_hub_id(name_or_path):
        raise ModelLoadError(f"{name_or_path}: the spec of a hub id is known only after loading it.")
    return get_spec(name_or_path)


def _registry_module(spec: ModelSpec, pretrained: bool) -> torch.nn.Module:
    """The timm module of a registry entry: from the hub, or built and then given its other weights."""
    if pretrained and spec.weights and spec.weights.startswith("hf-hub:"):
        return hub_module(spec)
    module = build_module(spec)
    if pretrained:
        load_weights(spec, module)
    return module


def _registry_hub_id(hub_id: str) -> bool:
    """Whether ``hub_id`` (``hf-hub:org/name``) holds a registry entry's weights (it then gets that entry's spec)."""
    try:
        get_spec(hub_id)
    except ModelLoadError:
        return False
    return True


def checkpoint_spec(path: Path) -> ModelSpec:
    """The spec of a checkpoint path (``checkpoint.locate``): our ``config.json``, or a local copy of a Hugging
    Face hub model in timm's format (``models.hub_folder``)."""
    folder, _weights = locate(path)
    cfg = hub_config(folder)
    return hub_folder_spec(folder, cfg) if cfg is not None else read_spec(path)
