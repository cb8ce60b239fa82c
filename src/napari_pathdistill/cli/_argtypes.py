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


def positive_float(text: str) -> float:
    """A finite float ``> 0`` (e.g. an um/px), else an argparse error."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a number > 0, got {text}")
    return value


def fraction(text: str) -> float:
    """A number in [0, 1] (e.g. a minimum tissue fraction), else an argparse error."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be a number in [0, 1], got {text}")
    return value


#: the common cases
positive_int = int_at_least(1)
non_negative_int = int_at_least(0)
