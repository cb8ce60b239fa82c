"""``pathdistill view`` after a plain ``pip install napari-pathdistill`` (no napari extra) says which extra it needs,
in one line, instead of a ModuleNotFoundError traceback."""

from __future__ import annotations

import sys

import pytest

from napari_pathdistill.cli.main import main


def test_view_without_napari_names_the_extra(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.setitem(
        sys.modules, "napari", None
    )  # find_spec -> None, import -> ImportError: not installed
    assert main(["view", "--sample"]) == 1
    err = capsys.readouterr().err
    assert err.strip().splitlines() == [
        "error: pathdistill view needs napari, which is not installed: pip install 'napari-pathdistill[napari]'"
    ]
