"""Where torch work runs: the one place that turns a user's device string into a ``torch.device``."""

from __future__ import annotations

from napari_pathdistill._native import preload_triton

preload_triton()  # before torch: this may be the first torch import after napari started OpenGL (see _native)

import torch  # noqa: E402

from napari_pathdistill.errors import DeviceError  # noqa: E402


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """``"auto"`` (or None) -> CUDA, else Apple MPS, else CPU; anything else as given ("cpu", "cuda:1", ...).

    Raises:
        DeviceError: ``device`` is not a torch device name, or names a CUDA / MPS device this machine lacks
            (instead of torch's error at the first tensor moved there).
    """
    if device is not None and str(device) != "auto":
        try:
            dev = torch.device(device)
        except RuntimeError:
            raise DeviceError(f"unknown device {str(device)!r}: use auto, cpu, cuda, cuda:N or mps") from None
        _check_available(dev)
        return dev
    if torch.cuda.is_available():
        return torch.device("cuda")
    if _mps_available():
        return torch.device("mps")
    return torch.device("cpu")


def _mps_available() -> bool:
    """Whether this torch build has Apple MPS and it is usable here."""
    return getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()


def _check_available(dev: torch.device) -> None:
    """Raise :class:`DeviceError` when ``dev`` is a CUDA or MPS device this machine does not have."""
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(
                f"device {str(dev)!r}: CUDA is not available here (no NVIDIA GPU or driver visible to "
                "torch); use device auto or cpu"
            )
        n = torch.cuda.device_count()
        if dev.index is not None and dev.index >= n:
            raise DeviceError(
                f"device {str(dev)!r}: this machine has {n} CUDA device(s), cuda:0 to cuda:{n - 1}"
            )
    elif dev.type == "mps" and not _mps_available():
        raise DeviceError(f"device {str(dev)!r}: Apple MPS is not available here; use device auto or cpu")
