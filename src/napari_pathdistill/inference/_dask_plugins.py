"""dask worker plugins of ``pathdistill embed --workers`` (imported only when a local cluster starts)."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from typing import Any

from distributed import WorkerPlugin


class WorkerSignals(WorkerPlugin):
    """How local worker processes take signals.

    SIGINT is ignored, so that Ctrl-C reaches the CLI alone, which stops the workers' slides and tears the
    cluster down (instead of every worker printing its KeyboardInterrupt traceback).

    SIGTERM (a batch scheduler such as SLURM or Kubernetes stopping the job signals every process of it, the
    workers too) stops every slide of the process after its current batch, with its rows written and its lock
    released (:func:`~napari_pathdistill.inference._stops.stop_all`), instead of killing the worker at once; the
    process then exits when its cluster closes. A second SIGTERM (or the nanny's, closing a worker that does not
    stop) kills it as before. The handler is an asyncio signal handler of the worker's event loop: it runs as a
    loop callback, never inside a lock that the interrupted thread holds. ``setup`` runs on that loop, in the
    worker process's main thread, where signal handlers can be installed.
    """

    name = "pathdistill-worker-signals"

    def setup(self, worker: Any) -> None:
        with contextlib.suppress(ValueError):  # not the worker process's main thread: leave it
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no event loop here: leave SIGTERM as it is
            return
        with contextlib.suppress(
            ValueError, RuntimeError, NotImplementedError
        ):  # not the main thread, Windows
            loop.add_signal_handler(signal.SIGTERM, _terminated, loop)


def _terminated(loop: asyncio.AbstractEventLoop) -> None:
    """The worker's SIGTERM: stop its slides (once; the next SIGTERM has the default action, death)."""
    from napari_pathdistill.inference._stops import stop_all

    loop.remove_signal_handler(signal.SIGTERM)
    stop_all()
