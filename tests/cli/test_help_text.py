"""Every ``--help`` of the two console scripts reads as help: no reStructuredText markup (the top-level
descriptions were the developers' module docstrings, "``pathdistill`` command line: a thin dispatcher over the
core")."""

from __future__ import annotations

import argparse

import pytest

from napari_pathdistill.cli.main import build_parser


def _parsers(parser: argparse.ArgumentParser):
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from _parsers(sub)


def test_pathdistill_help_has_no_markup() -> None:
    parsers = list(_parsers(build_parser()))
    assert len(parsers) > 10  # pathdistill, its commands and the eval tasks
    for parser in parsers:
        text = parser.format_help()
        assert "``" not in text and "dispatcher" not in text, parser.prog


def test_pathdistill_train_help_has_no_markup(capsys) -> None:
    from pathdistill_train.train.train import main

    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    assert text.startswith("usage: pathdistill-train") and "``" not in text
