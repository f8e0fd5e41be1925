"""What a dead worker process means for the chunk it was running.

Each worker writes the input index of the item it is about to run into a shared slot
(``current_item``); after a crash the pool reads it to pin the crash on that one item,
and builds the :class:`~fastparallel.WorkerDiedError` that names it, with the exit code.
"""

from __future__ import annotations

import logging

from ..chunking import Chunk
from ..errors import describe_exit, describe_item, worker_died_error
from .base import Crashed
from .launcher import WorkerProcess

__all__ = ["crash_outcome"]

log = logging.getLogger("fastparallel")


def crash_outcome(process: WorkerProcess, running: Chunk) -> Crashed:
    """The outcome for ``running``, the chunk ``process`` was running when it died."""
    index = process.current_item[0]
    culprit: int | None = index - running.start if 0 <= index - running.start < len(running.items) else None
    if culprit is not None:
        what = describe_item(running.start + culprit, running.items[culprit])
        indices: tuple[int, ...] = (running.start + culprit,)
    else:
        last = running.start + len(running.items) - 1
        what = f"items {running.start}-{last} (first: {describe_item(running.start, running.items[0])})"
        indices = tuple(range(running.start, last + 1))
    exitcode = process.exitcode()
    error = worker_died_error()(
        f"a worker process (pid {process.pid}) {describe_exit(exitcode)} while running {what}",
        indices,
        exitcode,
    )
    log.info("%s", error)
    return Crashed(running, culprit, error)
