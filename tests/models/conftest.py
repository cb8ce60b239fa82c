"""Fixtures of the model tests."""

from __future__ import annotations

import pytest
import timm


@pytest.fixture
def created(monkeypatch) -> list[str]:
    """Every ``timm.create_model`` call; none may happen (the call raises, so a regression fails fast too)."""
    calls: list[str] = []

    def create_model(name, *args, **kwargs):
        calls.append(name)
        raise RuntimeError("timm.create_model called: a hub download or a random init, not a fast failure")

    monkeypatch.setattr(timm, "create_model", create_model)
    return calls
