"""What the dispatcher needs from a backend, and what a backend reports back.

A backend (serial, threads, processes, an external executor) runs the chunks that the
dispatcher submits and reports what happened to each as an :data:`Outcome`:
:class:`Done`, :class:`Crashed`, :class:`Requeue` or :class:`Split`, and, with
``pause``, :class:`Started`. The dispatcher never needs to know which kind of backend
it drives; how many chunks are in flight is the dispatcher's business
(``chunks_per_worker`` times the number of workers).
"""

from __future__ import annotations

import queue
import sys
from collections.abc import Callable, Hashable
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol, TypeVar

from fastparallel.backends.runner import Call
from fastparallel.errors import FastParallelError, describe_item

if TYPE_CHECKING:
    from fastparallel.options import Options

__all__ = [
    "IDLE_WAKE_SECONDS",
    "Backend",
    "Chunk",
    "Crashed",
    "Done",
    "Measured",
    "Outcome",
    "Pool",
    "PoolSpec",
    "Requeue",
    "Split",
    "Started",
    "internal_failure",
    "wait_and_drain",
]

T = TypeVar("T")

# On a free-threaded build, biased reference counting hands an object that one thread
# created and another freed last back to its creating thread, which frees it the next
# time it runs Python code. A pool's thread blocked while idle would keep such objects
# (a result the caller dropped, however large) alive until its next task, so its idle
# waits end this often (seconds) and it runs a little. None: a build with a GIL.
IDLE_WAKE_SECONDS: float | None = 0.5 if "t" in getattr(sys, "abiflags", "") else None


class Chunk(NamedTuple):
    """Consecutive input items ``items``, the first of which has input index ``start``."""

    id: int
    start: int
    items: list[Any]


class Measured:
    """What finished chunks told: ``items`` items took ``seconds`` of work, and their
    results ``nbytes`` pickled bytes. A warm pool keeps one per recent call, so that a
    later call of the same function sizes its chunks from the start."""

    __slots__ = ("items", "nbytes", "rss_idle", "rss_need", "seconds")

    def __init__(self) -> None:
        self.items = 0
        self.seconds = 0.0
        self.nbytes = 0
        # Process pools under a memory budget: a worker's RSS between items, and the most
        # an item added to it (-1: not measured).
        self.rss_idle = 0
        self.rss_need = -1


class Done(NamedTuple):
    """The chunk ran. ``errors`` holds ready-to-raise exceptions, already naming their item."""

    chunk: Chunk
    values: list[Any]
    errors: list[tuple[int, BaseException]]
    seconds: float
    nbytes: int = 0  # size of the pickled results, where they crossed a process boundary


class Crashed(NamedTuple):
    """The worker running ``chunk`` died, or was given up on because an item ran past
    ``item_timeout``; the chunk's other items run again, one by one.

    ``culprit`` is the offset of the item that was running, when known; ``error`` is the
    :class:`~fastparallel.WorkerDiedError` or :class:`~fastparallel.ItemTimeoutError`
    to raise or to put in its slot.
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


class Started(NamedTuple):
    """With ``pause``: the chunk's item is about to be passed to ``fn``, at ``time``.

    ``time`` is a ``time.monotonic()`` reading, which is system-wide on Linux and macOS,
    so a worker process's reading compares with the caller's. The dispatcher releases
    the next item only once the previous one has started and ``pause`` has passed.
    """

    chunk: Chunk
    time: float


Outcome = Done | Crashed | Requeue | Split | Started


class Pool(Protocol):
    """What the registry of warm pools (:mod:`fastparallel.core.pools`) needs of a backend."""

    @property
    def reusable(self) -> bool:
        """Whether the pool may serve another call."""

    def shutdown(self) -> None:
        """Stop every worker; the pool is not used again."""

    def kill_at_exit(self) -> None:
        """At interpreter exit, for a pool still in use: make sure nothing waits for it."""


class PoolSpec(NamedTuple):
    """How to get a backend for one call: the registry of warm pools keeps an idle pool
    under ``key`` for the next call with the same key (None: this call only), and calls
    ``create()`` when it has none."""

    key: Hashable | None
    create: Callable[[], Backend]
    joins_children: bool = False  # multiprocessing joins its children at exit: stop ours before


class Backend(Pool, Protocol):
    """Runs chunks for one call at a time: ``begin``, then submit/poll, then ``end``."""

    chunks_per_worker: int
    """Chunks the dispatcher keeps in flight per worker: one running, the rest queued so
    that a worker never idles waiting for the dispatcher."""

    reports_starts: bool
    """Whether, for a call with ``pause``, the backend reports :class:`Started` before
    each chunk's item runs. Else (an external executor) the dispatcher can only space
    its submissions."""

    runs_on_poll: bool
    """Whether :meth:`poll` runs the next chunk in the calling thread (the serial backend):
    nothing finishes between polls, so past the deadline there is nothing to collect, and
    polling would start more work."""

    def begin(self, call: Call, n_workers: int, options: Options) -> Measured | None:
        """Prepare for a call of ``call`` on ``n_workers`` workers (pickle it, start workers...).

        A warm pool may return what it measured for the same call before: the call's
        chunk sizes start from it, and what this call measures is written back to it.
        """

    def submit(self, chunk: Chunk) -> None:
        """Start ``chunk`` (or queue it behind the worker's current one)."""

    def poll(self, timeout: float | None) -> list[Outcome]:
        """Wait up to ``timeout`` seconds (None: forever) for at least one outcome.

        Only called while chunks are in flight.
        """

    def item_deadline(self) -> float | None:
        """With ``item_timeout``: the ``time.monotonic()`` at which the earliest running
        item becomes overdue, and never later than ``item_timeout`` from now (an item may
        start right after this call); None where the backend enforces the limit itself.

        The dispatcher's wait step wakes up then, and calls :meth:`expire`.
        """

    def expire(self, now: float) -> list[Outcome]:
        """With ``item_timeout``: give up on the items overdue at ``now``.

        Each one's worker is stopped (a process is killed, a thread abandoned) and
        replaced; its chunk (or, where the results of its finished items are at hand,
        the part from the overdue item on, after a :class:`Done` for the rest) comes
        back as :class:`Crashed` with an ``ItemTimeoutError``, and the chunks that
        worker held but had not started as :class:`Requeue`.
        """

    def abort(self) -> None:
        """Stop all work of this call now (kill busy processes, cancel threads)."""

    def end(self) -> None:
        """The call is over (after success or abort)."""


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


def internal_failure(chunk: Chunk, exc: BaseException) -> Done:
    """The outcome of a chunk whose worker thread hit a fault of fastparallel's own (never
    one of ``fn``'s, which the per-item loop records): every item of the chunk fails with
    a :class:`~fastparallel.FastParallelError` caused by ``exc``. Reported so that the
    call ends with an error rather than wait forever for a thread that died."""
    error = FastParallelError(
        f"fastparallel failed while running the chunk of {len(chunk.items)} items from "
        f"{describe_item(chunk.start, chunk.items[0])}: {type(exc).__name__}; "
        "this is a bug in fastparallel, please report it"
    )
    error.__cause__ = exc
    return Done(
        chunk, [None] * len(chunk.items), [(o, error) for o in range(len(chunk.items))], 0.0
    )
