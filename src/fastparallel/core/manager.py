"""The manager of :class:`fastparallel.Executor`: one thread between the submitters and a pool.

Submitters (``submit()``, ``map()``, ``parallel(..., executor=...)``) queue
:class:`Batch` es of tasks and wake the manager; only the manager thread touches the
pool (a :class:`~fastparallel.backends.processes.pool.ProcessPool` or a
:class:`~fastparallel.backends.threads.ThreadPool`, the same ones ``parallel()``
uses, here owned by one executor for its lifetime). Its loop reads as named steps, as
the manager thread of CPython's ``ProcessPoolExecutor`` does:

1. :meth:`Manager._send_while_room`: claim pending futures (a cancelled one never runs)
   and send their tasks as chunks, while the pool has room;
2. :meth:`Manager._wait`: wait for outcomes, or for new work while nothing runs;
3. :meth:`Manager._handle`: set each future's result or exception; a crashed worker
   fails only the task it was running (``WorkerDiedError``), the rest of its chunk runs
   again, and the pool replaces the worker on the next send;
4. :meth:`Manager._finished`: after ``shutdown()``, once nothing is pending or running,
   stop the workers (:meth:`Manager._stop_workers`).

Every chunk is a list of :class:`~fastparallel.backends.runner.Task` mapped by
:func:`~fastparallel.backends.runner.run_task`, so one pickled call serves every task.
An initializer that fails, or anything the loop itself cannot survive, breaks the
executor (:meth:`Manager._break`): every future fails with a ``BrokenExecutor``.
"""

from __future__ import annotations

import itertools
import sys
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from typing import Any

from fastparallel import logs
from fastparallel.backends import registry
from fastparallel.backends.base import (
    IDLE_WAKE_SECONDS,
    Backend,
    Chunk,
    Crashed,
    Done,
    Outcome,
    Requeue,
    Split,
    Started,
)
from fastparallel.backends.runner import Call, Task, run_task
from fastparallel.errors import TaskExitError, worker_died_error
from fastparallel.options import Options

__all__ = ["Batch", "Manager", "broken_error", "interpreter_exiting"]

_TASK_CALL = Call(run_task, (), {})
_PACK_SECONDS = 0.002  # work per chunk when short tasks travel together
_PACK_MAX = 64  # tasks per chunk at most
_IDLE_SECONDS = 0.05  # idle longer, and the pool begins again before the next send


class Batch:
    """Tasks that travel to a worker as one chunk (one ``submit()``, or ``map()``'s
    ``chunksize`` tasks), each with its future; ``start`` numbers the first task.

    ``native``: the chunk of a ``parallel()`` call (see ``Executor``'s native path): its
    one future gets the chunk's whole :data:`~fastparallel.backends.base.Outcome`,
    about ``native`` (the caller's chunk). ``claimed``: the futures are running (set
    when first sent; a batch sent again after a crash stays claimed).
    """

    __slots__ = ("claimed", "futures", "native", "start", "tasks")

    def __init__(
        self,
        tasks: list[Task],
        futures: list[Future[Any]],
        start: int,
        native: Chunk | None = None,
    ):
        self.tasks = tasks
        self.futures = futures
        self.start = start
        self.native = native
        self.claimed = False

    def claim(self) -> bool:
        """Mark the futures running, dropping the cancelled ones; False if none is left."""
        if self.claimed:
            return True
        self.claimed = True
        keep = [i for i, f in enumerate(self.futures) if f.set_running_or_notify_cancel()]
        if len(keep) < len(self.futures) and self.native is None:
            self.tasks = [self.tasks[i] for i in keep]
            self.futures = [self.futures[i] for i in keep]
        return bool(keep)

    def single(self, offset: int) -> Batch:
        """The task at ``offset`` as a batch of its own (already claimed)."""
        batch = Batch([self.tasks[offset]], [self.futures[offset]], self.start + offset)
        batch.claimed = True
        return batch


def broken_error(threads: bool, reason: str) -> BaseException:
    """The ``BrokenExecutor`` for futures of an executor that cannot go on."""
    if threads:
        from concurrent.futures.thread import BrokenThreadPool

        return BrokenThreadPool(f"fastparallel.Executor is broken: {reason}")
    return worker_died_error()(f"fastparallel.Executor is broken: {reason}")


def _delivered(error: BaseException) -> BaseException:
    """What a future raises for a task that raised ``error``: ``SystemExit`` and friends
    as themselves (as ``concurrent.futures`` does), not wrapped as ``parallel()`` does."""
    cause = error.__cause__
    if isinstance(error, TaskExitError) and cause is not None:
        return cause
    return error


class Manager:
    """The state shared by an executor's submitters and its manager thread."""

    def __init__(self, options: Options, n_workers: int):
        self.options = options
        self.n_workers = n_workers
        self.threads = options.backend == "threads"
        # Reentrant: a future's done-callbacks run where its result is set, and one may
        # call submit() (which then raises if the executor is stopping).
        self._lock = threading.RLock()
        self._work = threading.Event()  # set: something to do while nothing runs
        self._pending: deque[Batch] = deque()
        self._running: dict[int, Batch] = {}  # by chunk id: sent to the pool
        # Chunks kept in flight: one running and one queued per worker, as parallel()'s pools.
        self.room = 2 * n_workers
        self._ready = 0  # claimed batches among the pending: sent next
        self._busy_until = time.monotonic()  # the last time it sent or handled something
        self._per_task: float | None = None  # seconds a task takes, as measured (a moving mean)
        self._ids = itertools.count()
        self._numbered = 0  # tasks numbered so far: errors name a task by its number
        self._backend: Backend | None = None
        self._wakeable = False  # the pool may be woken (between its first wake() and shutdown)
        self.thread: threading.Thread | None = None
        self.shutting_down = False
        self.broken: BaseException | None = None
        self._abort = False  # terminate_workers() / kill_workers()
        # Its class's module is imported now: at interpreter exit it could not be any more
        # (concurrent.futures.process registers an exit hook when imported).
        broken_error(self.threads, "")

    # -- the submitters' side --------------------------------------------------------------
    def add(self, tasks: list[Task], native: Chunk | None = None) -> list[Future[Any]]:
        """Queue ``tasks`` as one chunk; their futures (one for a native chunk)."""
        futures: list[Future[Any]] = [Future() for _ in ([None] if native else tasks)]
        with self._lock:
            self._check_open()
            start = self._numbered if native is None else native.start
            if native is None:
                self._numbered += len(tasks)
            batch = Batch(tasks, list(futures), start, native)
            # Claimed now if the pool has room for it, as CPython's pools queue a call for
            # their workers at once: it is running, and shutdown(cancel_futures=True)
            # leaves it be. The others are pending until the room frees up.
            if len(self._running) + self._ready < self.room:
                batch.claim()
                self._ready += 1
            self._pending.append(batch)
            if self.thread is None:
                self._start_thread()
            self._wake()
        return futures  # the caller's list: map() pops from it

    def _check_open(self) -> None:
        if self.broken is not None:
            raise broken_error(self.threads, str(self.broken))
        if interpreter_exiting():
            raise RuntimeError("cannot schedule new futures after interpreter shutdown")
        if self.shutting_down:
            raise RuntimeError("cannot schedule new futures after shutdown")

    def _start_thread(self) -> None:
        _watch(self)
        self.thread = threading.Thread(
            target=self._run, name="fastparallel-executor-manager", daemon=True
        )
        self.thread.start()

    def _wake(self) -> None:
        """(Under the lock.) Tell the manager thread there is something to do."""
        self._work.set()
        if self._wakeable and self._backend is not None:
            self._backend.wake()  # type: ignore[attr-defined]

    def shutdown(self, wait: bool, cancel_futures: bool) -> None:
        with self._lock:
            self.shutting_down = True
            if cancel_futures:
                self._cancel_pending()
            thread = self.thread
            self._wake()
        if wait and thread is not None and thread is not threading.current_thread():
            thread.join()

    def abort(self) -> None:
        """``terminate_workers()``: cancel what is pending, stop the workers running tasks
        now (their futures fail with ``WorkerDiedError``), then shut down."""
        with self._lock:
            self.shutting_down = True
            self._abort = True
            self._cancel_pending()
            self._wake()

    def _cancel_pending(self) -> None:
        for batch in self._pending:
            if not batch.claimed:
                for future in batch.futures:
                    future.cancel()

    # -- the manager thread ------------------------------------------------------------------
    def _run(self) -> None:
        try:
            self._backend = self._start_backend()
            while not self._finished():
                self._send_while_room()
                self._handle_all(self._wait())
        except BaseException as exc:
            self._break(exc)
        finally:
            self._stop_workers()

    def _start_backend(self) -> Backend:
        backend = registry.pool_spec(self.options.backend, self.options).create()
        backend.wake()  # type: ignore[attr-defined]  # its first call sets it up
        with self._lock:
            self._wakeable = True
        backend.begin(_TASK_CALL, self.n_workers, self.options)
        return backend

    def _finished(self) -> bool:
        with self._lock:
            if self._abort:
                self._terminate()
            return self.shutting_down and not self._pending and not self._running

    # -- step 1 --------------------------------------------------------------------------------
    def _send_while_room(self) -> None:
        assert self._backend is not None
        if not self._running and time.monotonic() - self._busy_until > _IDLE_SECONDS:
            # Idle for a while: begin again, as parallel() does per call, so that workers
            # that died meanwhile (the OOM killer) are replaced rather than handed a task,
            # and workers take over the caller's directory, sys.path and environment. (Not
            # after every task: it costs a few hundred microseconds.)
            self._backend.begin(_TASK_CALL, self.n_workers, self.options)
        self._busy_until = time.monotonic()
        while len(self._running) < self.room:
            with self._lock:
                if not self._pending:
                    return
                batch = self._next_batch(self.room - len(self._running))
            if batch is None:
                continue  # cancelled: it never runs
            chunk = Chunk(next(self._ids), batch.start, list(batch.tasks))
            self._running[chunk.id] = batch
            self._backend.submit(chunk)

    def _next_batch(self, free: int) -> Batch | None:
        """(Under the lock.) The next batch to send; None if it was cancelled.

        Tasks measured to take under :data:`_PACK_SECONDS` travel together while many
        wait (consecutive single submits, up to that much work per chunk, spread over
        the free room): a worker's round trip per task would cost more than the task.
        Each keeps its own future, and a crash still fails only the one that ran it.
        """
        batch = self._pending.popleft()
        self._ready -= batch.claimed
        pack = 1 if self._per_task is None else int(_PACK_SECONDS / max(self._per_task, 1e-7))
        # A chunk goes to one worker whole: never more than max_tasks_per_child.
        pack = min(pack, self.options.max_tasks_per_child or _PACK_MAX, _PACK_MAX)
        pack = min(pack, len(self._pending) // max(1, free))
        if batch.native is not None or len(batch.tasks) != 1 or pack < 2:
            return batch if batch.claim() else None
        packed = Batch([], [], batch.start)
        packed.claimed = True
        for taken in range(1, pack + 1):
            if batch.claim():
                if not packed.tasks:
                    packed.start = batch.start
                packed.tasks.extend(batch.tasks)
                packed.futures.extend(batch.futures)
            nxt = self._pending[0] if self._pending and taken < pack else None
            if nxt is None or nxt.native is not None or len(nxt.tasks) != 1:
                break
            if nxt.start != packed.start + len(packed.tasks):
                break  # tasks are named by number: a chunk's are consecutive
            batch = self._pending.popleft()
            self._ready -= batch.claimed
        return packed if packed.tasks else None

    # -- step 2 --------------------------------------------------------------------------------
    def _wait(self) -> list[Outcome]:
        assert self._backend is not None
        if self._running:
            return self._backend.poll(None)  # woken by new work (the pool's wake())
        with self._lock:
            if self._pending or self.shutting_down:
                return []
            self._work.clear()  # under the lock: a submitter's set() comes after
        while not self._work.wait(IDLE_WAKE_SECONDS):
            pass  # free-threaded: what was handed back to this thread is freed now
        return []

    # -- step 3 --------------------------------------------------------------------------------
    def _handle_all(self, outcomes: list[Outcome]) -> None:
        # A method of its own: its locals (the last outcome, its tasks and results) are
        # gone once it returns, not kept while the loop waits (futures hold no stale values).
        for outcome in outcomes:
            self._handle(outcome)
        if outcomes:
            self._busy_until = time.monotonic()

    def _handle(self, outcome: Outcome) -> None:
        batch = self._running.pop(outcome.chunk.id, None)
        if batch is None or isinstance(outcome, Started):
            return  # Started: only for pause, which executors do not use
        if batch.native is not None:
            batch.futures[0].set_result(_renamed(outcome, batch.native))
        elif isinstance(outcome, Done):
            self._measured(outcome)
            errors = dict(outcome.errors)
            for offset, future in enumerate(batch.futures):
                if offset in errors:
                    future.set_exception(_delivered(errors[offset]))
                else:
                    future.set_result(outcome.values[offset])
        elif isinstance(outcome, Crashed):
            self._crashed(batch, outcome)
        elif isinstance(outcome, Requeue):
            self._again([batch])
        else:  # Split: each task on its own, so that a failure lands on one
            self._again([batch.single(o) for o in range(len(batch.tasks))])

    def _measured(self, outcome: Done) -> None:
        per_task = outcome.seconds / max(1, len(outcome.values))
        last = self._per_task
        self._per_task = per_task if last is None else 0.8 * last + 0.2 * per_task

    def _crashed(self, batch: Batch, outcome: Crashed) -> None:
        """Only the task that was running fails; the chunk's others run again, each alone."""
        culprit = 0 if outcome.culprit is None and len(batch.tasks) == 1 else outcome.culprit
        if culprit is not None:
            batch.futures[culprit].set_exception(outcome.error)
        self._again([batch.single(o) for o in range(len(batch.tasks)) if o != culprit])

    def _again(self, batches: list[Batch]) -> None:
        with self._lock:
            self._pending.extendleft(reversed(batches))
            self._ready += len(batches)  # claimed: they go first

    # -- the end -------------------------------------------------------------------------------
    def _terminate(self) -> None:
        """(Under the lock, in the manager thread.) terminate_workers(): the tasks claimed
        but not sent never start, and the workers running tasks are killed (threads
        cannot be: their tasks finish); all their futures fail."""
        assert self._backend is not None
        stopped = [b for b in self._pending if b.claimed]
        self._pending.clear()  # the others were cancelled
        self._ready = 0
        if not self.threads:
            self._backend.abort()
            stopped.extend(self._running.values())
            self._running.clear()
        for batch in stopped:
            for future in batch.futures:
                if not future.done():
                    future.set_exception(_terminated(self.threads))

    def _break(self, exc: BaseException) -> None:
        """The loop cannot go on: every future fails with a ``BrokenExecutor``."""
        if isinstance(exc, SystemExit) and interpreter_exiting():
            reason = "the interpreter is exiting"
        else:
            import traceback

            text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
            logs.warning("fastparallel.Executor is broken:\n%s", text)
            reason = f"{type(exc).__name__}: {exc}"
        with self._lock:
            self.broken = exc
            self.shutting_down = True
            batches = [*self._running.values(), *self._pending]
            self._running.clear()
            self._pending.clear()
            self._ready = 0
        for batch in batches:
            for future in batch.futures:
                if batch.claimed or future.set_running_or_notify_cancel():
                    error = broken_error(self.threads, reason)
                    error.__cause__ = exc
                    if not future.done():
                        future.set_exception(error)

    def _stop_workers(self) -> None:
        with self._lock:
            self._wakeable = False
            backend = self._backend
        if backend is None:
            return
        try:
            backend.end()
            backend.shutdown()
        except Exception:  # pragma: no cover - best effort
            logs.debug("error while stopping an executor's workers", exc_info=True)


def _terminated(threads: bool) -> BaseException:
    if threads:
        return broken_error(True, "terminate_workers() stopped it before this task started")
    return worker_died_error()(
        "the worker process running this task was killed by terminate_workers() or "
        "kill_workers() (or the task had not started yet)"
    )


def _renamed(outcome: Outcome, chunk: Chunk) -> Outcome:
    """``outcome`` about ``chunk`` (the caller's chunk, of which it ran the tasks)."""
    if isinstance(outcome, Done):
        return Done(chunk, outcome.values, outcome.errors, outcome.seconds, outcome.nbytes)
    if isinstance(outcome, Crashed):
        return Crashed(chunk, outcome.culprit, outcome.error)
    return Requeue(chunk) if isinstance(outcome, Requeue) else Split(chunk)


def tasks_of(call: Call, items: Iterable[Any]) -> list[Task]:
    """The tasks that run ``call`` on each of ``items``: ``fn(*args, item, **kwargs)``."""
    return [Task(call.fn, (*call.args, item), call.kwargs) for item in items]


# -- interpreter exit: every live manager finishes its work (or, after Ctrl-C, is killed) --

_managers: weakref.WeakSet[Manager] = weakref.WeakSet()
_exit_lock = threading.Lock()
_exit_state = {"hooked": False, "exiting": False}


def interpreter_exiting() -> bool:
    return _exit_state["exiting"]


def _watch(manager: Manager) -> None:
    with _exit_lock:
        _managers.add(manager)
        if _exit_state["hooked"]:
            return
        _exit_state["hooked"] = True
        # Before threading joins its threads, like concurrent.futures' own hook; a first
        # executor started while the interpreter exits already cannot register.
        register: Callable[[Callable[[], None]], None] | None = getattr(
            threading, "_register_atexit", None
        )
        if register is None:
            import atexit

            atexit.register(_at_exit)
            return
        try:
            register(_at_exit)
        except RuntimeError:
            _exit_state["exiting"] = True


def _interrupted() -> bool:
    """Whether the interpreter exits because of an unhandled Ctrl-C (KeyboardInterrupt)."""
    last = getattr(sys, "last_exc", None) or getattr(sys, "last_value", None)
    return isinstance(last, KeyboardInterrupt)


def _at_exit() -> None:
    _exit_state["exiting"] = True
    managers = list(_managers)
    for manager in managers:
        if _interrupted():
            manager.abort()
        else:
            manager.shutdown(wait=False, cancel_futures=False)
    for manager in managers:
        if manager.thread is not None:
            manager.thread.join()
