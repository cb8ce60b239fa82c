"""argparse ``type=`` converters that refuse out-of-range numbers at parse time.

A value argparse refuses gives one ``pathdistill ...: error: argument --x: ...`` line and exit code 2, before
any slide, feature file or model is opened (instead of a ZeroDivisionError or a silent substitution later).
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable


def int_at_least(low: int) -> Callable[[str], int]:
    """A converter of an integer ``>= low``; its ``__name__`` is what argparse names in its message."""

    def convert(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer >= {low}, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be an integer >= {low}, got {value}")
        return value

    convert.__name__ = f"integer >= {low}"
    return convert


def checked_float(text: str, ok: Callable[[float], bool], expected: str) -> float:
    """``float(text)`` if finite and ``ok`` of it, else an argparse error saying it is ``expected``."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
    if not (math.isfinite(value) and ok(value)):
        raise argparse.ArgumentTypeError(f"must be {expected}, got {text}")
    return value


def positive_float(text: str) -> float:
    """A finite float ``> 0`` (e.g. an um/px), else an argparse error."""
    return checked_float(text, lambda v: v > 0, "a number > 0")


def non_negative_float(text: str) -> float:
    """A finite float ``>= 0`` (e.g. an optical-density threshold), else an argparse error."""
    return checked_float(text, lambda v: v >= 0, "a number >= 0")


def fraction(text: str) -> float:
    """A number in [0, 1] (e.g. a minimum tissue fraction), else an argparse error."""
    return checked_float(text, lambda v: 0.0 <= v <= 1.0, "a number in [0, 1]")


#: the common cases
positive_int = int_at_least(1)
non_negative_int = int_at_least(0)
