"""The sdist and the wheel built from it (as ``python -m build`` does) hold what they must and nothing else.

The checkout's files (``git ls-files``, untracked files not ignored included) are copied into a temporary folder
and built there without build isolation (no download; the egg-info lands in the copy, not in the checkout).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest
import yaml

build = pytest.importorskip("build")

ROOT = Path(__file__).resolve().parents[1]
#: repository files the sdist leaves out on purpose (MANIFEST.in): screenshots, training logs, git's own
NOT_IN_SDIST = ("docs/images/", "docs/training_run/", ".gitignore")
#: files the wheel must carry besides the modules: napari's manifest, the bundled student, plismbench's tiles
PACKAGE_DATA = (
    "napari_pathdistill/napari.yaml",
    "napari_pathdistill/py.typed",
    "napari_pathdistill/models/weights/pathdistill-student/config.json",
    "napari_pathdistill/models/weights/pathdistill-student/model.safetensors",
    "napari_pathdistill/evaluation/plismbench_assets/README.md",
    "pathdistill_train/configs/default.yaml",
)


def _checkout_files() -> list[str]:
    if not (ROOT / ".git").exists() or shutil.which("git") is None:
        pytest.skip("not a git checkout")
    out = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT, capture_output=True, check=True,
    ).stdout  # fmt: skip
    return sorted(f for f in out.decode().split("\0") if f and (ROOT / f).is_file())


@pytest.fixture(scope="module")
def dists(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[str], set[str], zipfile.ZipFile]:
    """(checkout files, sdist member paths without the top folder, the wheel built from the sdist)."""
    files = _checkout_files()
    tmp = tmp_path_factory.mktemp("dist")
    for f in (f for f in files if not f.startswith(NOT_IN_SDIST)):  # the screenshots: 12 MB not to copy
        (tmp / "tree" / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / f, tmp / "tree" / f)
    sdist = build.ProjectBuilder(tmp / "tree", python_executable=sys.executable).build("sdist", tmp / "out")
    with tarfile.open(sdist) as tar:
        tar.extractall(tmp / "unpacked", filter="data")
        members = {m.name.split("/", 1)[1] for m in tar.getmembers() if m.isfile()}
    (unpacked,) = (tmp / "unpacked").iterdir()
    wheel = build.ProjectBuilder(unpacked, python_executable=sys.executable).build("wheel", tmp / "out")
    return files, members, zipfile.ZipFile(wheel)


def test_the_sdist_holds_every_file_the_tests_and_the_build_need(dists) -> None:
    files, members, _ = dists
    missing = [f for f in files if not f.startswith(NOT_IN_SDIST) and f not in members]
    assert not missing, f"left out of the sdist (add to MANIFEST.in or NOT_IN_SDIST): {missing}"
    generated = {m for m in members if m not in files}
    assert all(m in ("PKG-INFO", "setup.cfg") or ".egg-info/" in m for m in generated), generated


def test_the_wheel_holds_the_packages_and_their_data_only(dists) -> None:
    files, _, wheel = dists
    names = set(wheel.namelist())
    assert {n.split("/")[0] for n in names} == {
        "napari_pathdistill", "pathdistill_train", "napari_pathdistill-0.1.0.dist-info",
    }  # fmt: skip
    package_files = [
        f for f in files if f.startswith(("src/napari_pathdistill/", "training/pathdistill_train/"))
    ]
    assert not [f for f in package_files if f.split("/", 1)[1] not in names]  # modules and data, every one
    assert set(PACKAGE_DATA) <= names
    assert len([n for n in names if n.startswith("napari_pathdistill/evaluation/plismbench_assets/")]) == 5
    assert sum(i.file_size for i in wheel.infolist()) < 20e6  # the 9.7 MB student and code, no data sets


def test_the_wheel_registers_the_plugin_and_the_commands(dists) -> None:
    _, _, wheel = dists
    info = "napari_pathdistill-0.1.0.dist-info/"
    entry_points = wheel.read(info + "entry_points.txt").decode()
    assert "[napari.manifest]\nnapari-pathdistill = napari_pathdistill:napari.yaml" in entry_points
    assert "pathdistill = napari_pathdistill.cli.main:main" in entry_points
    assert "pathdistill-train = pathdistill_train.launch:main" in entry_points
    metadata = wheel.read(info + "METADATA").decode()
    for line in (
        "Classifier: Framework :: napari",
        "License-Expression: Apache-2.0",
        "Requires-Python: >=3.10",
    ):
        assert line in metadata.splitlines()
    manifest = yaml.safe_load(wheel.read("napari_pathdistill/napari.yaml"))
    for command in manifest["contributions"]["commands"]:
        module = command["python_name"].split(":")[0]
        assert module.replace(".", "/") + ".py" in wheel.namelist(), command["id"]
