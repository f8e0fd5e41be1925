"""The current-item slot: which item a worker is running and since when, and which are overdue.

A worker that the caller watches writes into a slot of two 64-bit integers as it runs
a chunk (:func:`fastparallel.backends.runner.run_chunk`): at ``[0]`` the input index of
the item it is about to run (:data:`NO_ITEM` between items, :data:`STARTING` until a
worker process has started), and at ``[1]``, with ``item_timeout``, the time that item
started (``time.monotonic_ns()``). A worker process's slot is shared memory
(:func:`new_slot_memory`, or a multiprocessing ``RawArray``); a thread's is a list.

The caller reads it to pin a crash on one item (processes), and to tell when a running
item is overdue (processes, threads, and the probe of ``threadpool="auto"``): this module
is the one place that knows how to read it.
"""

from __future__ import annotations

import mmap
import os
from collections import namedtuple

TYPE_CHECKING = False  # worker processes import this module: no typing at run time
if TYPE_CHECKING:
    from collections.abc import Iterable
    from typing import Any, NamedTuple

    from fastparallel.backends.base import Chunk

    class RunningItem(NamedTuple):
        """The item a worker runs: its chunk, its offset there and when it started
        (seconds of ``time.monotonic()``)."""

        chunk: Chunk
        offset: int
        started: float

else:
    RunningItem = namedtuple("RunningItem", "chunk offset started", module=__name__)

__all__ = [
    "NO_ITEM",
    "SLOT_BYTES",
    "STARTING",
    "RunningItem",
    "is_overdue",
    "new_slot_memory",
    "next_deadline",
    "read_slot",
    "running_item",
]

NO_ITEM = -1  # the worker runs no item (between chunks, or after one)
STARTING = -2  # a worker process has not started yet: a death then is no item's crash
SLOT_BYTES = 16  # two signed 64-bit integers: the item's index, its start time


def read_slot(slot: Any, now: float) -> tuple[int, float]:
    """The input index of the item a worker runs (:data:`NO_ITEM`: none) and its start
    time (seconds of ``time.monotonic()``).

    The worker writes the time, then the index; the index is read before and after the
    time, so a pair is only trusted when both reads agree (a new item may start in
    between). If items start faster than that, the start is taken as ``now``: late
    rather than early, so an item is never failed before its time.

    Example:
        >>> read_slot([7, 2_000_000_000], now=5.0)
        (7, 2.0)
    """
    for _ in range(3):
        index = slot[0]
        started = slot[1]
        if slot[0] == index:
            return int(index), started / 1e9
    return int(slot[0]), now


def running_item(slot: Any, chunk: Chunk | None, now: float) -> RunningItem | None:
    """The item of ``chunk`` (the chunk a worker runs, if any) that the worker's ``slot``
    says is running; None between items.

    Example:
        >>> from fastparallel.backends.base import Chunk
        >>> running_item([11, 3_000_000_000], Chunk(0, 10, ["a", "b"]), now=4.0)
        RunningItem(chunk=Chunk(id=0, start=10, items=['a', 'b']), offset=1, started=3.0)
    """
    if chunk is None:
        return None
    index, started = read_slot(slot, now)
    offset = index - chunk.start
    if 0 <= offset < len(chunk.items):
        return RunningItem(chunk, offset, started)
    return None


def next_deadline(
    running: Iterable[RunningItem | None], limit: float | None, now: float
) -> float | None:
    """With ``item_timeout=limit``: when the earliest of the ``running`` items becomes
    overdue, and never later than ``limit`` from ``now`` (an item may start right after
    this call). None without a limit.

    Example:
        >>> next_deadline([None, RunningItem(None, 0, 2.0)], limit=5.0, now=3.0)
        7.0
        >>> next_deadline([], limit=5.0, now=3.0)
        8.0
    """
    if limit is None:
        return None
    started = [item.started for item in running if item is not None]
    return min(started, default=now) + limit


def is_overdue(item: RunningItem | None, limit: float | None, now: float) -> bool:
    """Whether ``item`` has run past ``item_timeout=limit`` at ``now``."""
    return item is not None and limit is not None and now >= item.started + limit


def new_slot_memory() -> tuple[int, mmap.mmap]:
    """Shared memory for a worker process's slot, set to :data:`STARTING`: its descriptor
    (to hand to the worker) and the caller's mapping of it."""
    if hasattr(os, "memfd_create"):
        fd = os.memfd_create("fastparallel-slot")
    else:  # an unlinked temporary file
        import tempfile

        with tempfile.TemporaryFile() as file:
            fd = os.dup(file.fileno())
    os.ftruncate(fd, SLOT_BYTES)
    memory = mmap.mmap(fd, SLOT_BYTES)
    memoryview(memory).cast("q")[0] = STARTING
    return fd, memory
