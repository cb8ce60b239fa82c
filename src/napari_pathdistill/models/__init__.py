"""Encoders: the model contract, the registry table, weight loaders, checkpoint folders, the EmbeddingModel.

``spec`` (ModelSpec, normalisations, JSON kwargs -> timm) is the leaf; ``registry`` (the table), ``pretrained``
(weight sources) and ``checkpoint`` (the folder format) build on it; ``factory.load_model`` uses them all.
"""

from napari_pathdistill._native import preload_triton

preload_triton()  # torch may be imported below after napari started Qt/OpenGL (see _native)

from napari_pathdistill.models.embedding_model import EmbeddingModel  # noqa: E402
from napari_pathdistill.models.factory import load_model  # noqa: E402
from napari_pathdistill.models.registry import get_spec, list_models  # noqa: E402
from napari_pathdistill.models.spec import ModelSpec  # noqa: E402

__all__ = ["EmbeddingModel", "ModelSpec", "get_spec", "list_models", "load_model"]
