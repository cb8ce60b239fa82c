"""Encoders: the model contract, the registry table, weight loaders, checkpoint folders, the EmbeddingModel.

``spec`` (ModelSpec, normalisations, JSON kwargs -> timm) is the leaf; ``registry`` (the table), ``pretrained``
(weight sources) and ``checkpoint`` (the folder format) build on it; ``factory.load_model`` uses them all.
"""

from napari_pathdistill.models.embedding_model import EmbeddingModel
from napari_pathdistill.models.factory import load_model
from napari_pathdistill.models.registry import get_spec, list_models
from napari_pathdistill.models.spec import ModelSpec

__all__ = ["EmbeddingModel", "ModelSpec", "get_spec", "list_models", "load_model"]
