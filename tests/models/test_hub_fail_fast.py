"""Hub models without local weights fail at once, online or not, with a message saying where weights go.

"At once" is checked by what is done, not by a stopwatch (CI's two cores run at load 3-8): no ``timm.create_model``
call (hub downloads with their ~24 s of retries, or a random init of the 1.1B-parameter model) happens before the
error. The endpoints are local and deterministic: a closed port (refused at once) and a listening socket that
never answers (a black hole: the connection is accepted by the kernel, the HTTP request gets no reply).
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import huggingface_hub.constants
import pytest

from napari_pathdistill.errors import ModelLoadError
from napari_pathdistill.models import load_model
from napari_pathdistill.models.pretrained import hub_reachable


@pytest.fixture
def black_hole() -> Iterator[str]:
    """``http://127.0.0.1:PORT`` of a socket that accepts connections (kernel backlog) and never answers; it is
    closed after 20 s (its connections reset), so a probe without a bound fails the test instead of hanging it."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    closer = threading.Timer(20.0, server.close)
    closer.start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}"
    closer.cancel()
    server.close()


@pytest.fixture
def refused() -> str:
    """``http://127.0.0.1:PORT`` of a port nothing listens on (bound, then closed)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{probe.getsockname()[1]}"


@pytest.mark.parametrize("endpoint", ["refused", "black_hole"])
def test_uncached_hub_model_fails_fast_when_the_hub_cannot_be_reached(endpoint, request, monkeypatch, tmp_path,
                                                                      created):  # fmt: skip
    url = request.getfixturevalue(endpoint)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", url)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))  # surely empty
    with pytest.raises(ModelLoadError) as err:
        load_model("h-optimus-0", device="cpu")
    assert created == []  # before: timm.create_model(pretrained=True), ~24 s of hub retries
    msg = str(err.value)
    assert f"{url} cannot be reached" in msg and str(tmp_path / "hub") in msg
    assert "HF_HOME" in msg and "HF_HUB_OFFLINE=1" in msg and "checkpoint folder" in msg
    assert "https://huggingface.co/bioptimus/H-optimus-0" in msg


def test_offline_mode_fails_fast_too(monkeypatch, tmp_path, created):
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(ModelLoadError, match="not in the local cache and HF_HUB_OFFLINE is set"):
        load_model("hf-hub:bioptimus/H0-mini", device="cpu")
    assert created == []


def test_reachability_probe_is_bounded(monkeypatch, black_hole):
    """The probe gives up on a hub that never answers. The bound is 30x the probe's timeout: a liveness check
    (an unbounded probe waits for the server, which never answers), not a speed measurement."""
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", black_hole)
    t0 = time.perf_counter()
    assert hub_reachable(timeout=0.3) is False
    assert time.perf_counter() - t0 < 10.0


def test_reachability_probe_counts_any_http_answer(monkeypatch):
    """An HTTP error status is an answer: the hub is reachable (the probe is not always False)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)

    def answer() -> None:
        conn, _ = server.accept()
        with conn:
            conn.recv(4096)
            conn.sendall(
                b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            )

    thread = threading.Thread(target=answer, daemon=True)
    thread.start()
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", f"http://127.0.0.1:{server.getsockname()[1]}")
    try:
        assert hub_reachable(timeout=30.0) is True
    finally:
        thread.join(30)
        server.close()
