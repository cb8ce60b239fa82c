"""tqdm bars of the command line: rate-limited, also into a log file; :func:`drive` runs a core generator with one.

tqdm limits its redraws in ``update()`` only; a bar moved by setting ``n`` and calling ``refresh()`` (or by a
``set_postfix`` that refreshes) draws once per call, which into a batch job's stderr file is one line per tile.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Any


def progress_bar(**kwargs: Any) -> Any:
    """A tqdm bar on stderr, redrawn at most every 0.1 s on a terminal and every 30 s into a file."""
    from tqdm import tqdm

    every = 0.1 if sys.stderr.isatty() else 30.0
    return tqdm(file=sys.stderr, mininterval=every, maxinterval=max(every, 10.0), **kwargs)


def advance(bar: Any, done: int, total: int | None, stage: str | None = None) -> None:
    """Move ``bar`` to ``done`` of ``total`` (None: unknown), with ``stage`` as its postfix, rate-limited."""
    bar.total = total or None
    if stage is not None:
        bar.set_postfix_str(stage[:40], refresh=False)
    bar.update(done - bar.n)


def drive(gen: Iterator, desc: str):
    """Consume a core generator, showing its ``Progress`` items with tqdm; returns the last non-progress item."""
    from napari_pathdistill.progress import drain

    with progress_bar(desc=desc, unit="step") as bar:
        return drain(gen, lambda item: advance(bar, item.done, item.total, item.stage))
