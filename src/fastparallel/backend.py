"""The interface between the dispatcher and the things that run chunks.

A backend (the serial runner, the thread pool, the process pool, an external executor)
accepts chunks with :meth:`Backend.submit` and reports what happened to them through
:meth:`Backend.poll` as :class:`Done`, :class:`Crashed`, :class:`Requeue` or
:class:`Split` outcomes.
The dispatcher never needs to know which kind of backend it drives.
"""

from __future__ import annotations

import queue
from typing import Any, NamedTuple, Protocol, TypeVar

from .chunking import Chunk

__all__ = ["Backend", "Done", "Crashed", "Requeue", "Split", "Outcome", "wait_and_drain"]

T = TypeVar("T")


def wait_and_drain(inbox: queue.SimpleQueue[T], timeout: float | None) -> list[T]:
    """Everything in ``inbox``, waiting up to ``timeout`` seconds for the first entry."""
    try:
        got = [inbox.get(timeout=timeout)]
    except queue.Empty:
        return []
    while True:
        try:
            got.append(inbox.get_nowait())
        except queue.Empty:
            return got


class Done(NamedTuple):
    """The chunk ran. ``errors`` holds ready-to-raise exceptions, already naming their item."""

    chunk: Chunk
    values: list[Any]
    errors: list[tuple[int, BaseException]]
    seconds: float
    nbytes: int = 0  # size of the pickled results, where they crossed a process boundary


class Crashed(NamedTuple):
    """The worker running ``chunk`` died.

    ``culprit`` is the offset of the item that was running, when known; ``error`` is the
    :class:`~fastparallel.errors.WorkerDiedError` to raise or to put in its slot.
    """

    chunk: Chunk
    culprit: int | None
    error: BaseException


class Requeue(NamedTuple):
    """The chunk never started (its worker went away first); submit it again."""

    chunk: Chunk


class Split(NamedTuple):
    """The chunk could not travel as a whole (an item or a result failed to unpickle).

    Each item runs again on its own, so that the failure lands on exactly one item.
    """

    chunk: Chunk


Outcome = Done | Crashed | Requeue | Split


class Backend(Protocol):
    """What the dispatcher needs from a backend, for the length of one call.

    Each backend also has a ``begin(...)`` that the entry point calls first; its
    arguments differ (a process pool takes the already pickled call).
    """

    def capacity(self) -> int:
        """How many more chunks can be submitted now without queueing deeply."""

    def submit(self, chunk: Chunk) -> None: ...

    def poll(self, timeout: float | None) -> list[Outcome]:
        """Wait up to ``timeout`` seconds (None: forever) for at least one outcome."""

    def abort(self) -> None:
        """Stop all work of this call now (kill busy processes, cancel threads)."""

    def end(self) -> None:
        """The call is over (after success or abort)."""
