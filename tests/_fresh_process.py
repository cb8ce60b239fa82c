"""Run Python in a fresh interpreter, for the tests whose subject is a process of its own.

Some checks cannot run in pytest's process: what a fresh session imports (pytest's process may hold torch or
matplotlib already), import-order crashes (a segfault would end the test run), signals and exit codes of the
CLIs, a benchmark that measures its own process. They all start ``sys.executable`` the same way here:

- the environment is the test's own (``DISPLAY`` of ``xvfb-run`` included, so a napari child draws on the
  same X server), with this checkout's ``src`` and ``training`` first on ``PYTHONPATH`` (the code under test,
  not an installed copy), after any ``paths`` the test puts before them (a ``sitecustomize`` folder);
- output is captured as text; a child that outlives ``timeout`` is killed and the test fails naming the
  command and showing its output so far, not with a bare ``TimeoutExpired``;
- ``returncode`` (0 unless told) is asserted with the child's stdout and stderr tails in the message; pass
  ``None`` to check the exit status in the test itself.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Iterable, Mapping
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
CODE_PATHS = (REPO_ROOT / "src", REPO_ROOT / "training")
TAIL = 3000  # characters of each stream shown in a failure


def python_env(paths: Iterable[str | os.PathLike] = (), **extra: str) -> dict[str, str]:
    """``os.environ`` plus ``extra``; ``paths``, then this checkout's src and training, lead PYTHONPATH."""
    inherited = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    pythonpath = [*map(str, paths), *map(str, CODE_PATHS), *inherited]
    return {**os.environ, **extra, "PYTHONPATH": os.pathsep.join(dict.fromkeys(pythonpath))}


def _text(stream: str | bytes | None) -> str:
    if isinstance(stream, bytes):
        return stream.decode(errors="replace")
    return stream or ""


def _streams(stdout: str | bytes | None, stderr: str | bytes | None) -> str:
    return f"--- stdout (tail) ---\n{_text(stdout)[-TAIL:]}\n--- stderr (tail) ---\n{_text(stderr)[-TAIL:]}"


def run_python(
    *args: str | os.PathLike,
    timeout: float = 300,
    returncode: int | None = 0,
    env: Mapping[str, str] | None = None,
    paths: Iterable[str | os.PathLike] = (),
) -> subprocess.CompletedProcess[str]:
    """``sys.executable *args`` in a fresh process, its output captured as text.

    Args:
        *args: the interpreter's arguments: ``-m module ...``, a script and its arguments, ``-c code``.
        timeout: seconds before the child is killed and the test fails.
        returncode: the exit status asserted; None asserts nothing.
        env: variables set in the child on top of this process's environment.
        paths: folders put first on the child's PYTHONPATH, before src and training.

    Returns:
        The finished process (``stdout`` and ``stderr`` as str).
    """
    cmd = [sys.executable, *map(str, args)]
    try:
        proc = subprocess.run(
            cmd, capture_output=True, text=True, timeout=timeout, env=python_env(paths, **(env or {}))
        )
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"{_shown(cmd)} did not finish in {timeout:g} s\n{_streams(e.stdout, e.stderr)}")
    if returncode is not None and proc.returncode != returncode:
        expected = f"exited {proc.returncode}, expected {returncode}"
        pytest.fail(f"{_shown(cmd)} {expected}\n{_streams(proc.stdout, proc.stderr)}")
    return proc


def run_code(
    code: str, *args: str | os.PathLike, flags: Iterable[str] = (), **kwargs
) -> subprocess.CompletedProcess[str]:
    """``python [flags] -c code *args`` (``code`` dedented) through :func:`run_python`, with its keywords."""
    return run_python(*flags, "-c", textwrap.dedent(code), *args, **kwargs)


def _shown(cmd: list[str]) -> str:
    """The command for a failure message: a ``-c`` program by its first line only."""
    shown = [a.strip().splitlines()[0] + " ..." if "\n" in a.strip() else a for a in cmd]
    return "the child process `" + " ".join(shown) + "`"
