"""What a dead or overdue worker process means for the chunk it was running.

Each worker writes the input index of the item it is about to run into a shared slot
(:mod:`fastparallel.backends.slots`) and, with ``item_timeout``, the time it started;
after a crash the pool reads it to pin the crash on that one item, and builds the
:class:`~fastparallel.WorkerDiedError` that names it, with the exit code
(:func:`crash_outcome`). A worker whose item is overdue is killed, and its item fails
with :class:`~fastparallel.ItemTimeoutError` (:func:`timeout_outcome`).
"""

from __future__ import annotations

from fastparallel import logs
from fastparallel.backends.base import Chunk, Crashed
from fastparallel.backends.processes.launch import WorkerProcess
from fastparallel.backends.slots import RunningItem
from fastparallel.errors import (
    describe_exit,
    describe_item,
    item_timeout_error,
    out_of_memory_words,
    worker_died_error,
)

__all__ = ["crash_outcome", "timeout_outcome"]


def crash_outcome(process: WorkerProcess, running: Chunk, out_of_memory: bool = False) -> Crashed:
    """The outcome for ``running``, the chunk ``process`` was running when it died
    (``out_of_memory``: killed by the OOM killer, as the pool's memory governor tells)."""
    index = process.current_item[0]
    culprit: int | None = (
        index - running.start if 0 <= index - running.start < len(running.items) else None
    )
    if culprit is not None:
        what = describe_item(running.start + culprit, running.items[culprit])
        indices: tuple[int, ...] = (running.start + culprit,)
    else:
        last = running.start + len(running.items) - 1
        what = f"items {running.start}-{last} (first: {describe_item(running.start, running.items[0])})"
        indices = tuple(range(running.start, last + 1))
    exitcode = process.exitcode()
    how = out_of_memory_words(exitcode) if out_of_memory else describe_exit(exitcode)
    error = worker_died_error()(
        f"a worker process (pid {process.pid}) {how} while running {what}",
        indices,
        exitcode,
        out_of_memory,
    )
    logs.info("%s", error)
    return Crashed(running, culprit, error)


def timeout_outcome(process: WorkerProcess, running: RunningItem, seconds: float) -> Crashed:
    """The outcome for the chunk of ``running`` when that item ran past
    ``item_timeout=seconds`` and ``process`` is killed."""
    chunk, offset = running.chunk, running.offset
    error = item_timeout_error(
        chunk.start + offset,
        chunk.items[offset],
        seconds,
        f"its worker process (pid {process.pid}) was killed and replaced",
    )
    return Crashed(chunk, offset, error)
