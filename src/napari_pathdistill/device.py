"""Where torch work runs: the one place that turns a user's device string into a ``torch.device``."""

from __future__ import annotations

from napari_pathdistill._native import preload_triton

preload_triton()  # before torch: this may be the first torch import after napari started OpenGL (see _native)

import torch  # noqa: E402


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """``"auto"`` (or None) -> CUDA, else Apple MPS, else CPU; anything else as given ("cpu", "cuda:1", ...)."""
    if device is not None and str(device) != "auto":
        return torch.device(device)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")
