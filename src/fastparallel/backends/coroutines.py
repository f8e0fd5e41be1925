"""Coroutine functions: their items run as tasks on an asyncio event loop in a helper thread.

``parallel(async_fn, items)`` runs the loop in a daemon thread of its own rather than in
the calling thread, so a call works the same from plain code and from inside a running
event loop (a notebook cell, code called from a coroutine), where ``asyncio.run()``
would fail: the calling thread only waits for outcomes, as it does for the thread pool.

A chunk runs as one task that awaits its items one after another, as a worker thread
runs its chunk, so the dispatcher's count of chunks in flight (one per worker) bounds
how many items run at once. Adaptive chunking then groups tiny coroutines, so that they
do not each pay a hand-off between the two threads.

Giving up on a call (fail-fast, a timeout, a closed generator, Ctrl-C) cancels its
tasks and waits briefly for them to unwind; the loop then serves no other call.

With ``item_timeout`` each item's coroutine runs as a task of its own, cancelled at
its deadline (it unwinds in the background; the item fails at once). A coroutine that
blocks the loop with synchronous code cannot be interrupted: nothing else on the loop
runs meanwhile, its deadline included.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import queue
import threading
import time
from collections import deque
from functools import partial
from typing import TYPE_CHECKING, Any

from fastparallel import logs
from fastparallel.backends.base import (
    IDLE_WAKE_SECONDS,
    Chunk,
    Done,
    Outcome,
    PoolSpec,
    Started,
    internal_failure,
    wait_and_drain,
)
from fastparallel.backends.runner import Call
from fastparallel.errors import item_error, item_timeout_error
from fastparallel.worker_state import mark_fork_safe

if TYPE_CHECKING:
    from fastparallel.options import Options

__all__ = ["EventLoopThread", "pool_spec"]


_UNWIND_SECONDS = 2.0  # abort(): how long cancelled tasks may take to finish
_CANCELLED = "its coroutine was cancelled"


class _Overdue(Exception):
    """An item's coroutine ran past ``item_timeout`` (told apart from what ``fn`` raises)."""


async def _within(coroutine: Any, seconds: float) -> Any:
    """Await ``coroutine`` as a task of its own for at most ``seconds``; else cancel it
    (it unwinds in the background) and raise :class:`_Overdue`."""
    task = asyncio.ensure_future(coroutine)
    try:
        done, _ = await asyncio.wait({task}, timeout=seconds)
    except asyncio.CancelledError:  # the whole chunk is cancelled (abort)
        task.cancel()
        raise
    if not done:
        task.cancel()
        task.add_done_callback(_retrieve)
        raise _Overdue
    return task.result()


def _retrieve(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()  # retrieved: no "exception was never retrieved" warning


class EventLoopThread:
    """An event loop in a daemon thread; kept warm between calls by :mod:`fastparallel.core.pools`."""

    chunks_per_worker = (
        1  # a chunk is one task: n_workers chunks in flight, n_workers items at once
    )
    reports_starts = True
    runs_on_poll = False

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._outcomes: queue.SimpleQueue[Outcome] = queue.SimpleQueue()
        self._pending: deque[Chunk] = deque()  # submitted, not yet turned into tasks by the loop
        self._handoff_scheduled = False  # the loop will take every pending chunk soon
        self._tasks: set[asyncio.Task[None]] = set()  # touched in the loop's thread only
        self._cancelling = False  # set in the loop's thread before it cancels the tasks
        self._closed = False
        self._call: Call | None = None
        self._stop_on_error = True
        self._report_starts = False
        self._item_timeout: float | None = None
        self._thread = threading.Thread(
            target=self._serve, name="fastparallel-event-loop", daemon=True
        )
        mark_fork_safe(self._thread, self._idle)  # an idle loop waits in select(), holding nothing
        self._thread.start()

    def _idle(self) -> bool:
        return not self._tasks and not self._pending

    # -- lifecycle -----------------------------------------------------------------
    def _serve(self) -> None:
        loop = self._loop
        asyncio.set_event_loop(loop)
        if IDLE_WAKE_SECONDS is not None:
            self._wake_while_idle()
        try:
            loop.run_forever()
            # Stopped (shutdown): let the tasks that are left, if any, unwind before closing.
            leftover = asyncio.all_tasks(loop)
            for task in leftover:
                task.cancel()
            if leftover:
                loop.run_until_complete(asyncio.wait(leftover, timeout=_UNWIND_SECONDS))
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            loop.close()

    def _wake_while_idle(self) -> None:
        """Free-threaded builds: run every ``IDLE_WAKE_SECONDS``, so that results this thread
        made and the caller dropped are freed while the loop has nothing to do."""
        assert IDLE_WAKE_SECONDS is not None
        self._loop.call_later(IDLE_WAKE_SECONDS, self._wake_while_idle)

    @property
    def reusable(self) -> bool:
        return not self._closed

    def shutdown(self) -> None:
        """Stop the loop (its thread ends once leftover tasks unwind). Does not wait."""
        self._closed = True
        with contextlib.suppress(RuntimeError):  # the loop is closed already
            self._loop.call_soon_threadsafe(self._loop.stop)

    def kill_at_exit(self) -> None:
        """Nothing to do: a daemon thread never holds up interpreter exit."""

    # -- one call --------------------------------------------------------------------
    def begin(self, call: Call, n_workers: int, options: Options) -> None:
        self._call = call
        self._stop_on_error = options.stop_chunk_on_error
        self._report_starts = bool(options.pause)
        self._item_timeout = options.item_timeout

    def submit(self, chunk: Chunk) -> None:
        self._pending.append(chunk)
        if not self._handoff_scheduled:  # one wake-up of the loop takes every chunk pending by then
            self._handoff_scheduled = True
            self._loop.call_soon_threadsafe(self._start_pending)

    def _start_pending(self) -> None:
        """In the loop's thread: a task for each pending chunk."""
        self._handoff_scheduled = (
            False  # before taking chunks: a later submit schedules another hand-off
        )
        call = self._call
        while self._pending:
            chunk = self._pending.popleft()
            if self._cancelling or call is None:
                continue
            task = self._loop.create_task(
                self._run(call, chunk, self._stop_on_error, self._report_starts)
            )
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _run(self, call: Call, chunk: Chunk, stop_on_error: bool, report_start: bool) -> None:
        """Await ``fn`` on each item of ``chunk`` in turn; report the outcome."""
        if report_start:
            self._outcomes.put(Started(chunk, time.monotonic()))
        try:
            outcome = await self._run_items(call, chunk, stop_on_error)
        except asyncio.CancelledError:  # abort(): nobody waits for this chunk any more
            raise
        except BaseException as exc:  # never fn's (recorded per item): a fault of ours
            outcome = internal_failure(chunk, exc)
        self._outcomes.put(outcome)

    async def _run_items(self, call: Call, chunk: Chunk, stop_on_error: bool) -> Done:
        fn, args, kwargs = call
        one = partial(fn, *args, **kwargs) if args or kwargs else fn
        limit = self._item_timeout
        values: list[object] = []
        errors: list[tuple[int, BaseException]] = []
        began = time.perf_counter()
        for offset, item in enumerate(chunk.items):
            index = chunk.start + offset
            try:
                values.append(await one(item) if limit is None else await _within(one(item), limit))
                continue
            except _Overdue:
                assert limit is not None
                error: BaseException = item_timeout_error(index, item, limit, _CANCELLED)
            except asyncio.CancelledError as exc:
                if self._cancelling:
                    raise
                error = item_error(exc, index, item)  # fn cancelled itself: an error of its item
            except BaseException as exc:
                error = item_error(exc, index, item)
            values.append(None)
            errors.append((offset, error))
            if stop_on_error:
                break
        return Done(chunk, values, errors, time.perf_counter() - began)

    def poll(self, timeout: float | None) -> list[Outcome]:
        return wait_and_drain(self._outcomes, timeout)

    def item_deadline(self) -> None:
        return None  # each item's task is cancelled at its deadline on the loop

    def expire(self, now: float) -> list[Outcome]:
        return []

    def abort(self) -> None:
        """Cancel this call's tasks and wait (briefly) for them to unwind; the loop is not reused."""
        self._closed = True
        try:
            unwound = asyncio.run_coroutine_threadsafe(self._cancel_all(), self._loop)
        except RuntimeError:  # the loop is closed already
            return
        try:
            unwound.result(_UNWIND_SECONDS)
        except concurrent.futures.TimeoutError:
            logs.warning(
                "fastparallel: coroutines still running %.0f s after being cancelled",
                _UNWIND_SECONDS,
            )

    async def _cancel_all(self) -> None:
        self._cancelling = True
        self._pending.clear()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)

    def end(self) -> None:
        self._call = None


def pool_spec(options: Options) -> PoolSpec:
    """A warm event loop thread."""
    return PoolSpec(("coroutines",), EventLoopThread)
