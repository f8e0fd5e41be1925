"""What a dead or overdue worker process means for the chunk it was running.

Each worker writes the input index of the item it is about to run into a shared slot
(``current_item``) and, with ``item_timeout``, the time it started; after a crash the
pool reads it to pin the crash on that one item, and builds the
:class:`~fastparallel.WorkerDiedError` that names it, with the exit code. While items
run, the pool reads it to tell when one is overdue (:func:`running_item`); such a
worker is killed, and its item fails with :class:`~fastparallel.ItemTimeoutError`
(:func:`timeout_outcome`).
"""

from __future__ import annotations

from .. import logs
from ..chunking import Chunk
from ..errors import describe_exit, describe_item, item_timeout_error, worker_died_error
from .base import Crashed, read_slot
from .launcher import WorkerProcess

__all__ = ["crash_outcome", "running_item", "timeout_outcome"]



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
    logs.info("%s", error)
    return Crashed(running, culprit, error)


def running_item(process: WorkerProcess, chunks: dict[int, Chunk], now: float) -> tuple[Chunk, int, float] | None:
    """The chunk ``process`` runs (the first of ``chunks``, those it holds), the offset of
    its running item and when that started (``time.monotonic()``); None between items."""
    if not chunks:
        return None
    running = next(iter(chunks.values()))
    index, started = read_slot(process.current_item, now)
    offset = index - running.start
    return (running, offset, started) if 0 <= offset < len(running.items) else None


def timeout_outcome(process: WorkerProcess, running: Chunk, offset: int, seconds: float) -> Crashed:
    """The outcome for ``running`` when its item at ``offset`` ran past ``item_timeout=seconds``
    and ``process`` is killed."""
    index = running.start + offset
    error = item_timeout_error(index, running.items[offset], seconds,
                               f"its worker process (pid {process.pid}) was killed and replaced")
    return Crashed(running, offset, error)
