"""The ``pathdistill-train`` script (``pathdistill_train.launch``) after a plain ``pip install napari-pathdistill``,
without the ``train`` extra: one line naming the extra, not a ModuleNotFoundError traceback from OmegaConf."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pathdistill_train.launch import main

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11 (the project supports 3.10)
PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"


@pytest.mark.parametrize("argv", [["--config", "smoke_cpu"], ["--help"]])
def test_train_script_without_omegaconf_names_the_extra(argv: list[str]) -> None:
    """The ``pathdistill-train`` script as pyproject.toml installs it, in a process where OmegaConf is missing."""
    module, func = tomllib.loads(PYPROJECT.read_text())["project"]["scripts"]["pathdistill-train"].split(":")
    code = (
        "import sys; sys.modules['omegaconf'] = None\n"
        f"from {module} import {func} as main\n"
        f"raise SystemExit(main({argv!r}))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONWARNINGS": "ignore"})  # fmt: skip
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines() == [
        "pathdistill-train: error: the trainer needs OmegaConf, which is not installed: "
        "pip install 'napari-pathdistill[train]'"
    ]


def test_train_script_is_the_launcher_and_runs_the_trainer(capsys) -> None:
    assert tomllib.loads(PYPROJECT.read_text())["project"]["scripts"]["pathdistill-train"] == (
        "pathdistill_train.launch:main"
    )
    with pytest.raises(SystemExit) as stop:
        main(["--help"])
    assert stop.value.code == 0 and capsys.readouterr().out.startswith(
        "usage: pathdistill-train [-h] [--config"
    )
