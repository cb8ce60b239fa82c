"""``pathdistill`` command line: a thin dispatcher over the core.

Each sub-command lives in its own module exposing ``add_parser(subparsers)``; the module registers a
``func(args) -> int`` with ``parser.set_defaults(func=...)``. Heavy imports (torch, napari) happen inside
``func`` so ``pathdistill --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import signal
import sys
import threading
from collections.abc import Sequence
from typing import Any

from napari_pathdistill import __version__

#: sub-command modules, in the order shown by --help
SUBCOMMANDS = ("view", "tiles", "embed", "qupath", "eval", "models")
#: what ``pathdistill --help`` says first (the module docstring is for developers)
DESCRIPTION = (
    "Whole-slide images, pathology foundation models and their distilled students: view, tile, embed, export to "
    "QuPath, evaluate."
)


def build_parser() -> argparse.ArgumentParser:
    """Build the top-level parser with every available sub-command."""
    parser = argparse.ArgumentParser(prog="pathdistill", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMANDS:
        try:
            module = importlib.import_module(f"napari_pathdistill.cli.{name}")
        except ModuleNotFoundError as err:
            if err.name == f"napari_pathdistill.cli.{name}":
                continue  # sub-command not built yet
            raise
        module.add_parser(sub)
    _describe(parser)
    return parser


def _describe(parser: argparse.ArgumentParser) -> None:
    """Each sub-command's ``--help`` opens with the line the command list shows for it (argparse leaves its
    description empty: ``pathdistill embed --help`` began with the usage alone)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help for a in action._choices_actions if a.help}
            for name, sub in action.choices.items():
                line = helps.get(name)
                if sub.description is None and line:
                    sub.description = line[:1].upper() + line[1:] + "."
                _describe(sub)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``pathdistill``; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    # not for the napari window of `view`: Qt's loop would swallow the exception, and SIGTERM must close it
    previous = _on_sigterm(_terminate) if args.command != "view" else None
    try:
        return int(args.func(args) or 0)
    except Terminated:
        print("terminated", file=sys.stderr)
        return 128 + signal.SIGTERM
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        _on_sigterm(previous)


class Terminated(KeyboardInterrupt):
    """SIGTERM (``kill``, a batch scheduler's stop) reached the CLI: it unwinds as Ctrl-C does (the rows embedded
    so far are written, the slide's lock released) instead of dying at once."""


def _terminate(_signum: int, _frame: object) -> None:
    raise Terminated


def _on_sigterm(handler: Any) -> Any:
    """Install ``handler`` for SIGTERM in the main thread; returns the previous one (None elsewhere: unchanged)."""
    if handler is None or threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGTERM, handler)


if __name__ == "__main__":
    raise SystemExit(main())
