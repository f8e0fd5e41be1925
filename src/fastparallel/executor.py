"""``fastparallel.Executor``: fastparallel's pools behind the ``concurrent.futures`` interface.

The executor runs on the same workers as :func:`~fastparallel.parallel` (the template
process or ``method=``, cloudpickle, large buffers by shared memory, the caller's
context), owned by it for its lifetime. Its manager thread is
:class:`fastparallel.core.manager.Manager`. See ``docs/executor.md``.
"""

from __future__ import annotations

import collections
import itertools
import time
import weakref
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor as _StandardExecutor
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any, TypeVar

from fastparallel.backends.runner import Task
from fastparallel.core.manager import Manager, tasks_of
from fastparallel.options import Options

if TYPE_CHECKING:
    import multiprocessing.context

    from fastparallel.backends.base import Chunk
    from fastparallel.backends.runner import Call

__all__ = ["Executor"]

T = TypeVar("T")


class Executor(_StandardExecutor):
    """A ``concurrent.futures.Executor`` on fastparallel's worker processes (or threads).

    Use it where an executor is expected (``submit()`` and futures, ``map()``,
    ``asyncio``'s ``loop.run_in_executor``, ``parallel(..., executor=...)``), keeping what
    ``ProcessPoolExecutor`` lacks: lambdas and notebook functions run on processes, no
    ``__main__`` guard is needed, and a worker that crashes fails only the futures it was
    running (with :class:`~fastparallel.WorkerDiedError`, a ``BrokenProcessPool``), then
    is replaced: the executor stays usable.

    Args:
        max_workers: worker processes (threads with ``threadpool=True``); None: as
            ``parallel()`` chooses (the CPUs this process may use).
        threadpool: run tasks on threads of this process instead.
        initializer: called as ``initializer(*initargs)`` in each worker as it starts;
            if it raises, the executor is broken (every future fails with a
            ``BrokenExecutor``), as in ``concurrent.futures``.
        initargs: arguments of ``initializer``.
        max_tasks_per_child: a worker process is replaced after this many tasks.
        method: how worker processes start: None (fastparallel's template process),
            ``"fork"``, ``"spawn"``, ``"forkserver"`` or a multiprocessing context (what
            ``ProcessPoolExecutor`` calls ``mp_context``).
        inner_threads: the threads each worker's native pools may use (BLAS, OpenMP...),
            as ``parallel(inner_threads=...)``; the same option, read by the same pools.

    Example:
        >>> from fastparallel import Executor
        >>> with Executor(2) as pool:
        ...     square = pool.submit(pow, 7, 2)
        ...     print(square.result(), list(pool.map(abs, [-1, -2, 3])))
        49 [1, 2, 3]
    """

    def __init__(
        self,
        max_workers: int | None = None,
        *,
        threadpool: bool = False,
        initializer: Callable[..., Any] | None = None,
        initargs: Iterable[Any] = (),
        max_tasks_per_child: int | None = None,
        method: str | multiprocessing.context.BaseContext | None = None,
        inner_threads: int | None = None,
    ) -> None:
        if max_workers is not None and (type(max_workers) is not int or max_workers <= 0):
            raise ValueError(f"max_workers must be greater than 0, got {max_workers!r:.60}")
        options = Options(
            n_workers=max_workers,
            threadpool=bool(threadpool),
            initializer=initializer,
            initargs=initargs,
            max_tasks_per_child=max_tasks_per_child,
            method=method,
            return_exceptions=True,  # one task's error is its future's, never the others'
            inner_threads=inner_threads,  # the pools read it from the options, as for parallel()
        )
        assert options.n_workers is not None
        self._max_workers = options.n_workers  # read by parallel(executor=...) for n_workers
        self._manager = Manager(options, options.n_workers)
        # Garbage-collected: the work already submitted runs, then the workers stop.
        finalizer = weakref.finalize(self, self._manager.shutdown, False, False)
        finalizer.atexit = False  # at exit, the manager's own hook does it

    @property
    def _broken(self) -> bool | str:
        """As ``concurrent.futures``' executors: false, or why the executor is broken."""
        broken = self._manager.broken
        return False if broken is None else f"{type(broken).__name__}: {broken}"

    @property
    def _executor_manager_thread(self) -> Any:
        """The manager thread, once started (the name ``ProcessPoolExecutor`` gives it)."""
        return self._manager.thread

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        """Schedule ``fn(*args, **kwargs)``; its :class:`~concurrent.futures.Future`.

        Example:
            >>> with Executor(1) as pool:
            ...     pool.submit(lambda x, y=1: x + y, 2, y=3).result()
            5
        """
        return self._manager.add([Task(fn, args, kwargs)])[0]

    def map(
        self,
        fn: Callable[..., T],
        *iterables: Iterable[Any],
        timeout: float | None = None,
        chunksize: int = 1,
        buffersize: int | None = None,
    ) -> Iterator[T]:
        """``map(fn, *iterables)`` on the workers: an iterator of the results, in order.

        ``chunksize`` tasks travel to a worker together (each still has its own result
        or error). With ``buffersize``, at most that many chunks are submitted ahead of
        the result being read (Python 3.14's ``buffersize``, here on every version), so
        that an endless input can be mapped. ``timeout``: seconds from this call after
        which the next result raises ``TimeoutError``. Leaving the iterator early (an
        exception, Ctrl-C, ``close()``) cancels the tasks that have not started.

        Example:
            >>> with Executor(2) as pool:
            ...     list(pool.map(divmod, [7, 9], [2, 4], chunksize=2))
            [(3, 1), (2, 1)]
        """
        if type(chunksize) is not int or chunksize < 1:
            raise ValueError("chunksize must be >= 1.")
        if buffersize is not None and type(buffersize) is not int:
            raise TypeError("buffersize must be an integer or None")
        if buffersize is not None and buffersize < 1:
            raise ValueError("buffersize must be None or > 0")
        # A chunk goes to one worker whole: never more tasks than it may run.
        chunksize = min(chunksize, self._manager.options.max_tasks_per_child or chunksize)
        end = None if timeout is None else time.monotonic() + timeout
        args = zip(*iterables, strict=False)  # as map(): the shortest input ends it
        batches = iter(lambda: list(itertools.islice(args, chunksize)), [])
        submit = self._manager.add
        ahead = itertools.islice(batches, buffersize) if buffersize else batches
        pending: collections.deque[list[Future[T]]] = collections.deque(
            submit([Task(fn, a, {}) for a in batch]) for batch in ahead
        )
        # The iterator holds the manager, not the executor: the executor may be collected.
        more = batches if buffersize else iter(())
        return _results(pending, more, lambda batch: submit([Task(fn, a, {}) for a in batch]), end)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """No new tasks; with ``cancel_futures``, cancel those that have not started.

        The tasks already submitted (and not cancelled) still run; then the workers stop.
        ``wait``: return once they have. Calling it again does no harm.
        """
        self._manager.shutdown(wait, cancel_futures)

    def terminate_workers(self) -> None:
        """Stop now (Python 3.14's name): cancel the tasks that have not started and stop
        the worker processes running tasks at once; those tasks' futures fail with
        :class:`~fastparallel.WorkerDiedError`. With ``threadpool=True`` the running tasks
        finish (a thread cannot be stopped)."""
        self._manager.abort()

    def kill_workers(self) -> None:
        """As :meth:`terminate_workers` (its workers are always stopped with SIGKILL:
        they hold nothing that a gentler signal would let them save)."""
        self._manager.abort()

    # -- parallel(fn, items, executor=Executor(...)) runs its chunks natively --------------
    def _fastparallel_run_chunk(self, call: Call, chunk: Chunk) -> Future[Any]:
        """Run ``parallel()``'s ``chunk`` of ``call`` as one chunk of this executor's
        workers; the future's result is its ``Outcome`` (as from parallel's own pools)."""
        return self._manager.add(tasks_of(call, chunk.items), native=chunk)[0]


def _results(
    pending: collections.deque[list[Future[T]]],
    more: Iterator[list[Any]],
    submit: Callable[[list[Any]], list[Future[T]]],
    end: float | None,
) -> Iterator[T]:
    """The results of ``pending`` futures in order; one more batch submitted per batch read."""
    current: list[Future[T]] = []
    try:
        while pending:
            batch = next(more, None)
            if batch:
                pending.append(submit(batch))
            current = pending.popleft()
            current.reverse()
            while current:
                # Popped, so that no reference to a result stays here once it is yielded.
                yield _result(current.pop(), end)
    finally:
        for futures in (current, *pending):
            for future in futures:
                future.cancel()


def _result(future: Future[T], end: float | None) -> T:
    try:
        return future.result(None if end is None else end - time.monotonic())
    finally:
        future.cancel()  # when result() was interrupted (a timeout, Ctrl-C): it never starts
        del future
