"""The registry table: the pathology encoders by name (timm architecture, kwargs, normalisation, weights).

Also lists the checkpoint folders shipped in ``models/weights`` (e.g. ``pathdistill-student``). Building and
loading live in ``models.factory.load_model``; the contract itself in ``models.spec``.
"""

from __future__ import annotations

import re
from pathlib import Path

from napari_pathdistill.errors import ModelLoadError
from napari_pathdistill.models.checkpoint import read_spec
from napari_pathdistill.models.pretrained import EFFICIENTNET_LITE2_PYPI
from napari_pathdistill.models.spec import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    SWIGLU_PACKED,
    TF_LITE_MEAN,
    TF_LITE_STD,
    ModelSpec,
)

SHIPPED = Path(__file__).parent / "weights"
#: file suffixes that make an unknown model name a path that does not exist
PATH_SUFFIXES = (".safetensors", ".json", ".pth", ".pt", ".ckpt", ".bin")


def _registry() -> dict[str, ModelSpec]:
    vit = {"img_size": 224, "num_classes": 0, "dynamic_img_size": True}
    swiglu = {"mlp_layer": SWIGLU_PACKED, "act_layer": "silu"}
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
            weights=EFFICIENTNET_LITE2_PYPI,
            family="cnn",
        ),
    }


def list_models() -> list[str]:
    """Registry names, then checkpoints shipped in ``models/weights`` (e.g. ``pathdistill-student``)."""
    return [*_registry(), *[n for n in _shipped() if n not in _registry()]]


def _shipped() -> list[str]:
    """Names of the checkpoint folders shipped in ``models/weights``."""
    return sorted(p.parent.name for p in SHIPPED.glob("*/config.json")) if SHIPPED.is_dir() else []


def get_spec(name: str) -> ModelSpec:
    """The :class:`ModelSpec` of a name :func:`list_models` lists, or of the Hugging Face repo of a registry entry.

    A checkpoint shipped in ``models/weights`` (``pathdistill-student``) gives its ``config.json``'s spec, with
    ``weights`` its ``model.safetensors``, as ``load_model`` reads it. ``bioptimus/H0-mini`` and
    ``hf-hub:bioptimus/H0-mini`` (any case) give the ``h0-mini`` entry (the first entry with those weights), so a
    model named by its hub page still gets its contract: normalisation, embedding rule (CLS + mean patch token,
    1536-d, for H0-mini), tile size and um/px.

    Raises:
        ModelLoadError: an unknown name; the message lists every name ``pathdistill models`` lists (the
            registry and the shipped checkpoints), and says when the name looks like a path that does not exist.
    """
    reg = _registry()
    if name in reg:
        return reg[name]
    if name in _shipped():
        return read_spec(SHIPPED / name)
    repo = name.removeprefix("hf-hub:").lower()
    for spec in reg.values():
        if spec.weights and spec.weights.lower() == f"hf-hub:{repo}":
            return spec
    known = f"known: {', '.join(list_models())}"
    if re.fullmatch(r"[\w.-]+/[\w.-]+", name) and not name.startswith("."):
        raise ModelLoadError(
            f"Unknown model '{name}': no such file or folder, and not a registry name ({known}); for a model "
            f"on the Hugging Face hub write hf-hub:{name}."
        )
    if any(c in name for c in "/\\") or name.startswith(("~", ".")) or Path(name).suffix in PATH_SUFFIXES:
        raise ModelLoadError(f"Checkpoint '{name}' does not exist (no such file or folder); {known}.")
    raise ModelLoadError(f"Unknown model '{name}'; {known}, or give a checkpoint folder.")
