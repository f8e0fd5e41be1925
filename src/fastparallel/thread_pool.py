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
from collections.abc import Callable
from typing import Any

from .backend import Done, Outcome, wait_and_drain
from .chunking import Chunk
from .errors import initializer_error, item_error
from .tasks import Call, run_chunk

__all__ = ["ThreadPool"]

_PREFETCH = 2  # chunks queued per thread, so a thread never waits for the dispatcher


class _InitFailed(Exception):
    def __init__(self, error: BaseException):
        self.error = error


class ThreadPool:
    def __init__(self, initializer: Callable[..., Any] | None = None, initargs: tuple[Any, ...] = ()):
        self._initializer = initializer
        self._initargs = initargs
        self._tasks: queue.SimpleQueue[tuple[Call, Chunk, bool] | None] = queue.SimpleQueue()
        self._outcomes: queue.SimpleQueue[Outcome | _InitFailed] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._cancelled = [False]  # read by running chunks before each item
        self._closed = False
        self._inflight = 0
        self._n_workers = 0
        self._call: Call | None = None
        self._stop_on_error = True

    # -- lifecycle -----------------------------------------------------------------
    def _ensure_threads(self, n: int) -> None:
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
            call, chunk, stop_on_error = task
            run = run_chunk(call, chunk.items, chunk.start, stop_on_error, cancelled=self._cancelled)
            errors = [(o, item_error(e, chunk.start + o, chunk.items[o])) for o, e in run.errors]
            self._outcomes.put(Done(chunk, run.values, errors, run.seconds))

    def shutdown(self) -> None:
        """Ask every thread to stop after its current item. Does not wait."""
        self._closed = True
        self._cancelled[0] = True
        for _ in self._threads:
            self._tasks.put(None)

    # -- one call --------------------------------------------------------------------
    def begin(self, call: Call, n_workers: int, stop_on_error: bool) -> None:
        self._call = call
        self._stop_on_error = stop_on_error
        self._n_workers = n_workers
        self._inflight = 0
        self._ensure_threads(n_workers)

    def capacity(self) -> int:
        return _PREFETCH * self._n_workers - self._inflight

    def submit(self, chunk: Chunk) -> None:
        assert self._call is not None
        self._inflight += 1
        self._tasks.put((self._call, chunk, self._stop_on_error))

    def poll(self, timeout: float | None) -> list[Outcome]:
        if not self._inflight:
            return []
        outcomes: list[Outcome] = []
        for outcome in wait_and_drain(self._outcomes, timeout):
            if isinstance(outcome, _InitFailed):
                self.shutdown()
                raise initializer_error(outcome.error, "a worker thread")
            self._inflight -= 1
            outcomes.append(outcome)
        return outcomes

    def abort(self) -> None:
        if self._inflight:
            self.shutdown()

    def end(self) -> None:
        self._call = None

    @property
    def reusable(self) -> bool:
        return not self._closed
