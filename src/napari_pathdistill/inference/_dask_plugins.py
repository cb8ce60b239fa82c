"""dask worker plugins of ``pathdistill embed --workers`` (imported only when a local cluster starts)."""

from __future__ import annotations

import contextlib
import signal
from typing import Any

from distributed import WorkerPlugin


class IgnoreSigint(WorkerPlugin):
    """Local worker processes ignore SIGINT, so that Ctrl-C reaches the CLI alone, which cancels the tasks and
    tears the cluster down (instead of every worker printing its KeyboardInterrupt traceback)."""

    name = "pathdistill-ignore-sigint"

    def setup(self, worker: Any) -> None:
        with contextlib.suppress(ValueError):  # not the worker process's main thread: leave it
            signal.signal(signal.SIGINT, signal.SIG_IGN)
