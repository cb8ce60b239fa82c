"""Hub models without local weights fail in < 2 s, online or not, with a message saying where weights go."""

from __future__ import annotations

import time

import huggingface_hub.constants
import pytest

from napari_pathdistill.errors import ModelLoadError
from napari_pathdistill.models import load_model
from napari_pathdistill.models.pretrained import hub_reachable


@pytest.mark.parametrize(
    "endpoint",
    ["http://127.0.0.1:9", "https://10.255.255.1"],  # refused at once / a black hole (connect never answers)
)
def test_uncached_hub_model_fails_fast_when_the_hub_cannot_be_reached(endpoint, monkeypatch, tmp_path):
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", endpoint)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))  # surely empty
    t0 = time.perf_counter()
    with pytest.raises(ModelLoadError) as err:
        load_model("h-optimus-0", device="cpu")
    assert time.perf_counter() - t0 < 2.0  # before: ~24 s of hub retries
    msg = str(err.value)
    assert f"{endpoint} cannot be reached" in msg and str(tmp_path / "hub") in msg
    assert "HF_HOME" in msg and "HF_HUB_OFFLINE=1" in msg and "checkpoint folder" in msg
    assert "https://huggingface.co/bioptimus/H-optimus-0" in msg


def test_offline_mode_fails_fast_too(monkeypatch, tmp_path):
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    t0 = time.perf_counter()
    with pytest.raises(ModelLoadError, match="not in the local cache and HF_HUB_OFFLINE is set"):
        load_model("hf-hub:bioptimus/H0-mini", device="cpu")
    assert time.perf_counter() - t0 < 2.0


def test_reachability_probe_is_bounded(monkeypatch):
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", "https://10.255.255.1")
    t0 = time.perf_counter()
    assert hub_reachable(timeout=0.3) is False
    assert time.perf_counter() - t0 < 0.6
