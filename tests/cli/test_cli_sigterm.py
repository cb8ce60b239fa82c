"""``pathdistill`` under SIGTERM (``kill PID``, a batch scheduler stopping the job): it unwinds like Ctrl-C."""

from __future__ import annotations

from pathlib import Path

from _fresh_process import run_code

SCRIPT = """
    import os, signal, sys, time
    from pathlib import Path
    from napari_pathdistill.cli import embed, main

    def run(args, parser=None):  # stands for an embed run: its finally blocks write rows, release the lock
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(30)
            return 0
        finally:
            Path(sys.argv[1]).write_text("cleaned up")

    embed.run = run
    sys.exit(main.main(["embed", "slide.svs", "--out", "out"]))
    """


def test_sigterm_unwinds_the_command_and_exits_143(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    proc = run_code(SCRIPT, marker, timeout=120, returncode=143)
    assert proc.stderr.strip().splitlines()[-1] == "terminated"
    assert marker.read_text() == "cleaned up"  # finally blocks ran: not killed outright


def test_sigterm_handler_is_restored_after_main(monkeypatch) -> None:
    import signal

    from napari_pathdistill.cli import main

    before = signal.getsignal(signal.SIGTERM)
    assert main.main(["models"]) in (0, 1)
    assert signal.getsignal(signal.SIGTERM) is before
