"""One copy of a loaded model per process while tasks use it: :func:`shared_model`.

The widgets load their model inside each task's worker. Without sharing, two tasks on the same model (the Embed
widget running on one slide while the Similarity widget runs on a pair, or the Attention widget with the same
model on both sides) each held their own copy: 4.5 GB of float32 weights per copy of H-optimus-0, on the GPU too.
:func:`shared_model` hands every caller the one :class:`EmbeddingModel` already loaded for the same weights,
device and precision while any caller still holds it (a weak reference: nothing stays loaded once the last task
has let it go). Two threads asking at once wait for one load.

The same weights are the same checkpoint file as it is now (resolved path, size and modification time of its
weights file and ``config.json``: a re-export is loaded afresh), or the same registry entry (a hub
name of a registry entry is that entry). Sharing is safe because inference never changes a model: the attention
maps' hooks act only on the thread that set them (``inference.attention``).
"""

from __future__ import annotations

import threading
import weakref
from pathlib import Path
from typing import Any

from napari_pathdistill.device import resolve_device
from napari_pathdistill.errors import ModelLoadError
from napari_pathdistill.models.checkpoint import locate
from napari_pathdistill.models.embedding_model import EmbeddingModel
from napari_pathdistill.models.factory import checkpoint_path, checkpoint_spec, load_model
from napari_pathdistill.models.registry import get_spec

_LOADED: weakref.WeakValueDictionary[tuple[Any, ...], EmbeddingModel] = weakref.WeakValueDictionary()
_LOCK = threading.Lock()
_KEY_LOCKS: dict[tuple[Any, ...], threading.Lock] = {}


def model_key(source: str, device: str = "auto", amp: str = "auto") -> tuple[Any, ...]:
    """What makes two requests the same model: the weights (see the module docstring), device and precision.

    Raises:
        ModelLoadError: a checkpoint path that ``load_model`` would refuse (e.g. a torch pickle).
    """
    path = checkpoint_path(source)
    if path is not None:
        folder, _ = locate(path)
        weights = Path(str(checkpoint_spec(path).weights))
        ident: tuple[Any, ...] = tuple(_file_stamp(p) for p in (weights, folder / "config.json"))
    else:
        try:
            ident = ("registry", get_spec(source).name)
        except ModelLoadError:  # an hf-hub: id of no registry entry
            ident = ("source", source)
    return (ident, str(resolve_device(device)), amp)


def _file_stamp(path: Path) -> tuple[str, int, int]:
    try:
        st = path.stat()
    except OSError:
        return (str(path), -1, -1)  # load_model says what is missing
    return (str(path.resolve()), st.st_size, st.st_mtime_ns)


def shared_model(source: str, device: str = "auto", amp: str = "auto") -> EmbeddingModel:
    """``load_model(source, device, amp=amp)``, or the model already loaded for the same key and still held.

    Raises:
        ModelLoadError: as :func:`~napari_pathdistill.models.factory.load_model`.
    """
    key = model_key(source, device, amp)
    with _LOCK:
        lock = _KEY_LOCKS.setdefault(key, threading.Lock())
    with lock:
        model = _LOADED.get(key)
        if model is None:
            model = load_model(source, device=device, amp=amp)
            _LOADED[key] = model
    return model
