"""A small pool of daemon threads that run chunks.

Why not :class:`concurrent.futures.ThreadPoolExecutor`: its threads are joined at
interpreter exit (one stuck ``fn`` then blocks exit forever) and it refuses work from
``atexit`` handlers. These threads are daemons; a call that gives up on them (timeout,
fail-fast, a closed generator) marks them cancelled so they stop at the next item, and
the pool is not reused.

With ``item_timeout``, each thread writes the index and start time of its running item
into its own slot (as a worker process does into shared memory). A thread whose item
is overdue cannot be killed: it is abandoned (it stops before its chunk's next item, and
its late result is dropped) and a new thread takes its place, so the pool keeps its width.
The items of its chunk that had finished keep their results; those after the overdue
one run again.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterable
from functools import partial
from typing import TYPE_CHECKING, Any, NamedTuple

from fastparallel.backends import native_threads
from fastparallel.backends.base import (
    IDLE_WAKE_SECONDS,
    Chunk,
    Crashed,
    Done,
    Outcome,
    PoolSpec,
    Started,
    internal_failure,
    wait_and_drain,
)
from fastparallel.backends.runner import Call, run_chunk
from fastparallel.backends.slots import (
    NO_ITEM,
    RunningItem,
    is_overdue,
    next_deadline,
    running_item,
)
from fastparallel.errors import initializer_error, item_error, item_timeout_error
from fastparallel.worker_state import mark_fork_safe

if TYPE_CHECKING:
    from fastparallel.options import Options

__all__ = ["ThreadPool", "pool_spec"]

_ABANDONED = (
    "a thread cannot be stopped: it was abandoned (its late result is dropped) and replaced"
)


_WAKE = object()  # put among the outcomes by wake()


class _Task(NamedTuple):
    """A chunk to run, with what the call asks of the thread that runs it."""

    call: Call
    chunk: Chunk
    stop_on_error: bool
    report_start: bool
    timed: bool
    inner_threads: int | None  # OpenMP's thread count is per thread: set in each pool thread


class _InitFailed(Exception):
    def __init__(self, error: BaseException):
        self.error = error


class _PoolThread:
    """A thread of the pool and what the caller may read of it."""

    __slots__ = ("abandoned", "began", "chunk", "finished", "slot", "stop", "thread")

    def __init__(self) -> None:
        self.thread: threading.Thread | None = None
        # For item_timeout: the input index of the running item and its start (monotonic_ns).
        self.slot = [NO_ITEM, 0]
        self.stop = [False]  # read by its running chunk before each item
        self.chunk: Chunk | None = None  # the chunk it runs
        # item_timeout: the values and errors of its chunk so far, and when the chunk began
        self.finished: tuple[list[Any], list[tuple[int, BaseException]]] = ([], [])
        self.began = 0.0
        self.abandoned = False


def _between_chunks(worker: _PoolThread) -> bool:
    return worker.chunk is None


class ThreadPool:
    """Daemon threads fed from one queue; kept warm between calls by :mod:`fastparallel.core.pools`."""

    chunks_per_worker = 2
    reports_starts = True
    runs_on_poll = False

    def __init__(self, initializer: Callable[..., Any] | None = None, initargs: Iterable[Any] = ()):
        self._initializer = initializer
        self._initargs = tuple(initargs)
        # (call, chunk, stop_on_error, report_start, timed), or None: stop
        self._tasks: queue.SimpleQueue[_Task | None] = queue.SimpleQueue()
        self._outcomes: queue.SimpleQueue[Outcome | _InitFailed | object] = queue.SimpleQueue()
        self._workers: list[_PoolThread] = []
        self._lock = (
            threading.Lock()
        )  # a chunk ends once: done by its thread, or abandoned by the caller
        self._closed = False
        self._call: Call | None = None
        self._stop_on_error = True
        self._report_starts = False
        self._item_timeout: float | None = None
        self._inner_threads: int | None = None

    # -- lifecycle -----------------------------------------------------------------
    @property
    def reusable(self) -> bool:
        return not self._closed

    def shutdown(self) -> None:
        """Ask every thread to stop after its current item. Does not wait."""
        self._closed = True
        for worker in self._workers:
            worker.stop[0] = True
            self._tasks.put(None)

    def kill_at_exit(self) -> None:
        """Nothing to do: daemon threads never hold up interpreter exit."""

    def wake(self) -> None:
        """End the :meth:`poll` in progress in another thread (or the next one) now: for
        an owner that other threads hand work to (``fastparallel.Executor``'s manager)."""
        self._outcomes.put(_WAKE)

    def _start_threads(self, n: int) -> None:
        while len(self._workers) < n:
            worker = _PoolThread()
            worker.thread = threading.Thread(
                target=self._work,
                args=(worker,),
                daemon=True,
                name=f"fastparallel-thread-{len(self._workers)}",
            )
            # Between chunks it waits on the queue, holding nothing a forked child needs.
            mark_fork_safe(worker.thread, partial(_between_chunks, worker))
            worker.thread.start()
            self._workers.append(worker)

    def _work(self, worker: _PoolThread) -> None:
        if self._initializer is not None:
            try:
                self._initializer(*self._initargs)
            except BaseException as exc:
                self._outcomes.put(_InitFailed(exc))
                return
        while True:
            try:
                task = self._tasks.get(timeout=IDLE_WAKE_SECONDS)
            except queue.Empty:
                continue  # free-threaded: what was handed back to this thread is freed now
            if task is None or self._closed:
                return
            chunk = task.chunk
            if task.timed:  # before the chunk: the caller reads them once it sees the chunk
                worker.finished, worker.began = ([], []), time.monotonic()
            worker.chunk = chunk
            if task.report_start:
                self._outcomes.put(Started(chunk, time.monotonic()))
            limiter = None
            try:
                if task.inner_threads is not None:
                    limiter = native_threads.limit_openmp_here(task.inner_threads)
                outcome = self._run(worker, task.call, chunk, task.stop_on_error, task.timed)
            except BaseException as exc:  # never fn's (run_chunk records those): a fault of ours
                outcome = internal_failure(chunk, exc)
            finally:
                if limiter is not None:
                    limiter.restore_original_limits()
            with self._lock:
                if worker.abandoned:
                    return  # its item ran past item_timeout: already reported, and replaced
                worker.chunk = None
                self._outcomes.put(outcome)
            # Before waiting for the next task: keep no reference to this chunk's items
            # and results (an idle thread would keep them alive).
            del task, chunk, outcome

    @staticmethod
    def _run(
        worker: _PoolThread, call: Call, chunk: Chunk, stop_on_error: bool, timed: bool
    ) -> Done:
        run = run_chunk(
            call,
            chunk.items,
            chunk.start,
            stop_on_error,
            cancelled=worker.stop,
            current_item=worker.slot if timed else None,
            timed=timed,
            into=worker.finished if timed else None,
        )
        errors = [(o, item_error(e, chunk.start + o, chunk.items[o])) for o, e in run.errors]
        return Done(chunk, run.values, errors, run.seconds)

    # -- one call --------------------------------------------------------------------
    def begin(self, call: Call, n_workers: int, options: Options) -> None:
        self._call = call
        self._stop_on_error = options.stop_chunk_on_error
        self._report_starts = bool(options.pause)
        self._item_timeout = options.item_timeout
        self._inner_threads = options.inner_threads
        self._start_threads(n_workers)

    def submit(self, chunk: Chunk) -> None:
        assert self._call is not None
        timed = self._item_timeout is not None
        self._tasks.put(
            _Task(
                self._call,
                chunk,
                self._stop_on_error,
                self._report_starts,
                timed,
                self._inner_threads,
            )
        )

    def poll(self, timeout: float | None) -> list[Outcome]:
        outcomes: list[Outcome] = []
        for outcome in wait_and_drain(self._outcomes, timeout):
            if outcome is _WAKE:
                continue
            if isinstance(outcome, _InitFailed):
                self.shutdown()
                raise initializer_error(outcome.error, "a worker thread")
            outcomes.append(outcome)  # type: ignore[arg-type]  # neither _WAKE nor _InitFailed
        return outcomes

    def item_deadline(self) -> float | None:
        now = time.monotonic()
        running = [running_item(w.slot, w.chunk, now) for w in self._workers]
        return next_deadline(running, self._item_timeout, now)

    def expire(self, now: float) -> list[Outcome]:
        """Abandon the threads whose item is overdue, and start one in the place of each."""
        outcomes: list[Outcome] = []
        abandoned = 0
        for worker in list(self._workers):
            with self._lock:  # the thread cannot report its chunk done meanwhile
                running = running_item(worker.slot, worker.chunk, now)
                if running is None or not is_overdue(running, self._item_timeout, now):
                    continue
                worker.abandoned = True
                worker.stop[0] = True
            self._workers.remove(worker)
            abandoned += 1
            outcomes.extend(self._abandoned(worker, running, self._item_timeout or 0.0))
        self._start_threads(len(self._workers) + abandoned)
        return outcomes

    @staticmethod
    def _abandoned(worker: _PoolThread, running: RunningItem, limit: float) -> list[Outcome]:
        """The outcomes of the chunk of a thread abandoned on its ``running`` item: the
        items before it keep their results, it fails, the items after it run again."""
        chunk, offset, started = running
        values, errors = worker.finished  # the thread appends no more before its item returns
        outcomes: list[Outcome] = []
        if offset:
            done = Chunk(chunk.id, chunk.start, chunk.items[:offset])
            failed = [
                (o, item_error(e, chunk.start + o, chunk.items[o])) for o, e in errors if o < offset
            ]
            outcomes.append(Done(done, values[:offset], failed, started - worker.began))
        rest = Chunk(chunk.id, chunk.start + offset, chunk.items[offset:])
        error = item_timeout_error(rest.start, rest.items[0], limit, _ABANDONED)
        return [*outcomes, Crashed(rest, 0, error)]

    def abort(self) -> None:
        """Give up on this call's chunks: the threads stop at their next item, and the
        pool is not reused (a thread may still be inside ``fn``)."""
        self.shutdown()

    def end(self) -> None:
        self._call = None


def pool_spec(options: Options) -> PoolSpec:
    """A warm thread pool; one with an initializer serves this call only."""
    if options.initializer is not None:
        return PoolSpec(None, lambda: ThreadPool(options.initializer, options.initargs))
    return PoolSpec(("threads",), ThreadPool)
