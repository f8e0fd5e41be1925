"""A small pool of daemon threads that run chunks.

Why not :class:`concurrent.futures.ThreadPoolExecutor`: its threads are joined at
interpreter exit (one stuck ``fn`` then blocks exit forever) and it refuses work from
``atexit`` handlers. These threads are daemons; a call that gives up on them (timeout,
fail-fast, a closed generator) marks them cancelled so they stop at the next item, and
the pool is not reused.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

from .. import pools
from ..calls import Call, run_chunk
from ..chunking import Chunk
from ..errors import initializer_error, item_error
from .base import Done, Outcome, Started, wait_and_drain

if TYPE_CHECKING:
    from ..options import Options

__all__ = ["ThreadPool", "checkout"]


class _InitFailed(Exception):
    def __init__(self, error: BaseException):
        self.error = error


class ThreadPool:
    """Daemon threads fed from one queue; kept warm between calls by :mod:`fastparallel.pools`."""

    chunks_per_worker = 2
    reports_starts = True

    def __init__(self, initializer: Callable[..., Any] | None = None, initargs: Iterable[Any] = ()):
        self._initializer = initializer
        self._initargs = tuple(initargs)
        # (call, chunk, stop_on_error, report_start), or None: stop
        self._tasks: queue.SimpleQueue[tuple[Call, Chunk, bool, bool] | None] = queue.SimpleQueue()
        self._outcomes: queue.SimpleQueue[Outcome | _InitFailed] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._cancelled = [False]  # read by running chunks before each item
        self._closed = False
        self._call: Call | None = None
        self._stop_on_error = True
        self._report_starts = False

    # -- lifecycle -----------------------------------------------------------------
    @property
    def reusable(self) -> bool:
        return not self._closed

    def shutdown(self) -> None:
        """Ask every thread to stop after its current item. Does not wait."""
        self._closed = True
        self._cancelled[0] = True
        for _ in self._threads:
            self._tasks.put(None)

    def kill_at_exit(self) -> None:
        """Nothing to do: daemon threads never hold up interpreter exit."""

    def _start_threads(self, n: int) -> None:
        while len(self._threads) < n:
            thread = threading.Thread(
                target=self._work, name=f"fastparallel-thread-{len(self._threads)}", daemon=True
            )
            thread.start()
            self._threads.append(thread)

    def _work(self) -> None:
        if self._initializer is not None:
            try:
                self._initializer(*self._initargs)
            except BaseException as exc:  # noqa: BLE001 - reported to the caller
                self._outcomes.put(_InitFailed(exc))
                return
        while True:
            task = self._tasks.get()
            if task is None or self._closed:
                return
            call, chunk, stop_on_error, report_start = task
            if report_start:
                self._outcomes.put(Started(chunk, time.monotonic()))
            run = run_chunk(call, chunk.items, chunk.start, stop_on_error, cancelled=self._cancelled)
            errors = [(o, item_error(e, chunk.start + o, chunk.items[o])) for o, e in run.errors]
            self._outcomes.put(Done(chunk, run.values, errors, run.seconds))

    # -- one call --------------------------------------------------------------------
    def begin(self, call: Call, n_workers: int, options: Options) -> None:
        self._call = call
        self._stop_on_error = options.stop_on_error
        self._report_starts = bool(options.pause)
        self._start_threads(n_workers)

    def submit(self, chunk: Chunk) -> None:
        assert self._call is not None
        self._tasks.put((self._call, chunk, self._stop_on_error, self._report_starts))

    def poll(self, timeout: float | None) -> list[Outcome]:
        outcomes: list[Outcome] = []
        for outcome in wait_and_drain(self._outcomes, timeout):
            if isinstance(outcome, _InitFailed):
                self.shutdown()
                raise initializer_error(outcome.error, "a worker thread")
            outcomes.append(outcome)
        return outcomes

    def abort(self) -> None:
        """Give up on this call's chunks: the threads stop at their next item, and the
        pool is not reused (a thread may still be inside ``fn``)."""
        self.shutdown()

    def end(self) -> None:
        self._call = None


def checkout(options: Options) -> AbstractContextManager[ThreadPool]:
    """A warm thread pool; one with an initializer serves this call only."""
    if options.initializer is not None:
        return pools.checkout(None, lambda: ThreadPool(options.initializer, options.initargs))
    return pools.checkout(("threads",), ThreadPool)
