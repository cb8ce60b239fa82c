"""Encoders: registry of timm architectures, checkpoint folders, the EmbeddingModel wrapper."""

from napari_pathdistill.models.embedding_model import EmbeddingModel
from napari_pathdistill.models.registry import ModelSpec, get_spec, list_models, load_model

__all__ = ["EmbeddingModel", "ModelSpec", "get_spec", "list_models", "load_model"]
