"""The fresh-interpreter helper of the tests (``tests/_fresh_process.py``): what its child runs and what a failure
says."""

from __future__ import annotations

import os

import pytest

from _fresh_process import CODE_PATHS, run_code

CHILD_PATH = "import os, sys; print(os.environ['PYTHONPATH']); print(sys.argv[1:])"


def test_the_child_runs_this_checkouts_code_after_the_given_paths(tmp_path) -> None:
    proc = run_code(CHILD_PATH, "a b", env={"PATHDISTILL_X": "1"}, paths=[tmp_path])
    pythonpath, argv = proc.stdout.splitlines()
    assert pythonpath.split(os.pathsep)[:3] == [str(tmp_path), *map(str, CODE_PATHS)]
    assert argv == "['a b']"


def test_an_unexpected_exit_status_shows_the_childs_output() -> None:
    with pytest.raises(pytest.fail.Exception) as failed:
        run_code("import sys; print('to stdout'); sys.exit('why it stopped')", returncode=0)
    msg = str(failed.value)
    assert "exited 1, expected 0" in msg and "to stdout" in msg and "why it stopped" in msg


def test_a_child_past_its_timeout_is_killed_and_its_stderr_shown() -> None:
    code = """
    import sys, time
    print('stuck at step 3', file=sys.stderr, flush=True)
    time.sleep(60)
    """
    with pytest.raises(pytest.fail.Exception) as failed:
        run_code(code, timeout=5)
    msg = str(failed.value)
    assert "-c import sys, time ...` did not finish in 5 s" in msg and "stuck at step 3" in msg
