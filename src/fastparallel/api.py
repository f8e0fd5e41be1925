"""The entry point, :func:`parallel`: check the arguments, pick a backend, run, collect."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Iterator
from operator import itemgetter
from typing import TYPE_CHECKING, Any, Literal, TypeVar, overload

from . import pools
from .chunking import Chunk, ChunkReader, ChunkSizer
from .cpus import default_workers
from .dispatch import Piece, dispatch, input_error
from .errors import add_note, initializer_error
from .progress import ProgressCallback, make_progress
from .serial import SerialBackend
from .serialization import dumps
from .tasks import Call

if TYPE_CHECKING:
    import multiprocessing.context

__all__ = ["parallel"]

R = TypeVar("R")
ReturnAs = Literal["list", "generator", "generator_unordered"]
_RETURN_AS = ("list", "generator", "generator_unordered")


@overload
def parallel(
    fn: Callable[..., R],
    items: Iterable[Any],
    *args: Any,
    n_workers: int | None = None,
    threadpool: bool = False,
    progress: bool | ProgressCallback | None = None,
    total: int | None = None,
    chunksize: int | None = None,
    timeout: float | None = None,
    pause: float = 0,
    method: str | multiprocessing.context.BaseContext | None = None,
    return_exceptions: bool = False,
    max_tasks_per_child: int | None = None,
    initializer: Callable[..., Any] | None = None,
    initargs: Iterable[Any] = (),
    return_as: Literal["list"] = "list",
    executor: Any = None,
    **kwargs: Any,
) -> list[R]: ...


@overload
def parallel(
    fn: Callable[..., R],
    items: Iterable[Any],
    *args: Any,
    n_workers: int | None = None,
    threadpool: bool = False,
    progress: bool | ProgressCallback | None = None,
    total: int | None = None,
    chunksize: int | None = None,
    timeout: float | None = None,
    pause: float = 0,
    method: str | multiprocessing.context.BaseContext | None = None,
    return_exceptions: bool = False,
    max_tasks_per_child: int | None = None,
    initializer: Callable[..., Any] | None = None,
    initargs: Iterable[Any] = (),
    return_as: Literal["generator", "generator_unordered"],
    executor: Any = None,
    **kwargs: Any,
) -> Iterator[R]: ...


def parallel(
    fn: Callable[..., R],
    items: Iterable[Any],
    *args: Any,
    n_workers: int | None = None,
    threadpool: bool = False,
    progress: bool | ProgressCallback | None = None,
    total: int | None = None,
    chunksize: int | None = None,
    timeout: float | None = None,
    pause: float = 0,
    method: str | multiprocessing.context.BaseContext | None = None,
    return_exceptions: bool = False,
    max_tasks_per_child: int | None = None,
    initializer: Callable[..., Any] | None = None,
    initargs: Iterable[Any] = (),
    return_as: ReturnAs = "list",
    executor: Any = None,
    **kwargs: Any,
) -> list[R] | Iterator[R]:
    """Apply ``fn`` to every item of ``items`` in parallel; results in input order.

    ``fn`` is called as ``fn(*args, item, **kwargs)``, exactly like
    ``fastcore.parallel.parallel``, so swapping the import is enough.

    Args:
        fn: the function to call. On processes it may be a lambda, a closure or defined
            in a notebook: it is sent with cloudpickle, once per call and worker.
        items: any iterable, read lazily; generators and infinite iterators work.
        *args: positional arguments passed before the item.
        n_workers: workers to use. None: the CPUs this process may use (threads: a few
            more, at most 32). 0: run serially in the calling thread. Never more
            workers than items.
        threadpool: True for threads (I/O, C code that releases the GIL), False for
            processes (pure-Python CPU work).
        progress: True for a progress bar (HTML in a notebook, a bar in a terminal, a
            few plain lines in a log); a callable ``progress(done, total)`` to report
            yourself; None/False for none.
        total: the number of items, when ``len(items)`` does not tell (for the ETA).
        chunksize: items per task sent to a worker. None adapts it to the measured
            time per item.
        timeout: seconds for the whole call; past it, ``ParallelTimeoutError`` (a
            ``TimeoutError``) is raised and busy worker processes are killed.
        pause: at least this many seconds between the starts of two items.
        method: start method for processes: 'forkserver', 'spawn', 'fork', a
            multiprocessing context, or None (forkserver where available, else spawn).
        return_exceptions: put an item's exception in its result slot instead of
            raising it.
        max_tasks_per_child: replace a worker process after it ran this many items.
        initializer: called as ``initializer(*initargs)`` once in each worker.
        initargs: arguments for ``initializer``.
        return_as: "list" (default), "generator" (a lazy iterator in input order, with
            bounded memory) or "generator_unordered" (in completion order).
        executor: run on an external ``concurrent.futures.Executor`` or a
            ``dask.distributed.Client`` instead of a local pool.
        **kwargs: keyword arguments passed to ``fn``.

    Returns:
        A list of results in input order, or an iterator of them (``return_as``).

    Raises:
        TypeError, ValueError: bad arguments, before any worker starts.
        Exception: the first exception raised by ``fn``, with its original type, the
            worker's traceback as ``__cause__`` and a note naming the item.
        WorkerDiedError: a worker process died while running an item.
        ParallelTimeoutError: ``timeout`` passed.

    Example:
        >>> from fastparallel import parallel
        >>> parallel(pow, [1, 2, 3], 2, threadpool=True)   # pow(2, item)
        [2, 4, 8]
        >>> parallel(lambda x: x * 10, range(4), n_workers=0)
        [0, 10, 20, 30]
    """
    iterator = _check_arguments(
        fn, items, n_workers, threadpool, progress, total, chunksize, timeout, pause, method,
        return_exceptions, max_tasks_per_child, initializer, initargs, return_as, executor,
    )
    if total is None:
        try:
            total = len(items)  # type: ignore[arg-type]
        except (TypeError, AttributeError):
            total = None
    run = _Run(
        call=Call(fn, args, kwargs),
        items=iterator,
        n_workers=n_workers,
        threadpool=threadpool,
        progress=progress,
        total=total,
        chunksize=chunksize,
        timeout=timeout,
        pause=pause,
        method=method,
        return_exceptions=return_exceptions,
        max_tasks_per_child=max_tasks_per_child,
        initializer=initializer,
        initargs=tuple(initargs),
        executor=executor,
    )
    if return_as == "list":
        return _collect(run.pieces(ordered=False, streaming=False))
    return _stream(run.pieces(ordered=return_as == "generator", streaming=True))


def _collect(pieces: Iterator[Piece]) -> list[Any]:
    collected = list(pieces)
    if len(collected) == 1:
        return collected[0][1]
    collected.sort(key=itemgetter(0))
    out: list[Any] = []
    for _, values in collected:
        out.extend(values)
    return out


def _stream(pieces: Iterator[Piece]) -> Iterator[Any]:
    try:
        for _, values in pieces:
            yield from values
    finally:
        pieces.close()  # type: ignore[attr-defined]


class _Run:
    """One call's settings, and the code that runs it."""

    def __init__(self, *, call: Call, items: Iterator[Any], n_workers: int | None, threadpool: bool,
                 progress: Any, total: int | None, chunksize: int | None, timeout: float | None,
                 pause: float, method: Any, return_exceptions: bool, max_tasks_per_child: int | None,
                 initializer: Callable[..., Any] | None, initargs: tuple[Any, ...], executor: Any):
        self.call = call
        self.items = items
        if n_workers is None:
            if executor is None:
                n_workers = default_workers(threadpool)
            else:
                from .external import executor_workers

                n_workers = executor_workers(executor)
        self.requested = n_workers
        self.threadpool = threadpool
        self.progress = progress
        self.total = total
        self.chunksize = chunksize if chunksize is not None else (1 if pause else None)
        self.timeout = timeout
        self.pause = pause
        self.method = method
        self.return_exceptions = return_exceptions
        self.max_tasks_per_child = max_tasks_per_child
        self.initializer = initializer
        self.initargs = initargs
        self.executor = executor

    def pieces(self, ordered: bool, streaming: bool) -> Iterator[Piece]:
        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        serial = self.requested == 0 and self.executor is None
        if not serial and self.executor is None and pools.exiting():
            import logging

            logging.getLogger("fastparallel").warning(
                "parallel() called while the interpreter exits: running serially")
            serial = True
        width = 1 if serial else self.requested
        if self.total is not None:
            width = max(1, min(width, self.total))
        sizer = ChunkSizer(self.chunksize, self.total, width)
        if self.max_tasks_per_child is not None:  # a chunk must fit in one worker's allowance
            sizer.cap = min(sizer.cap, self.max_tasks_per_child)
        reader = ChunkReader(self.items, sizer)

        # Read one chunk per worker before starting anything: an empty or short input
        # starts no pool, or a smaller one.
        head: list[Chunk] = []
        try:
            while len(head) < width:
                chunk = reader.next_chunk()
                if chunk is None:
                    break
                head.append(chunk)
        except Exception as exc:
            raise input_error(exc, reader) from None
        if not head:
            return
        n_workers = len(head) if reader.exhausted else width

        backend, release = self._backend(serial, n_workers)
        try:
            yield from dispatch(
                backend,
                reader,
                sizer,
                n_workers=n_workers,
                head=head,
                ordered=ordered,
                window=max(8, 4 * n_workers) if streaming else None,
                return_exceptions=self.return_exceptions,
                deadline=deadline,
                timeout=self.timeout,
                pause=self.pause,
                progress=make_progress(self.progress, self.total),
                total=self.total,
            )
        finally:
            backend.end()
            release()

    def _backend(self, serial: bool, n_workers: int) -> tuple[Any, Callable[[], None]]:
        stop_on_error = not self.return_exceptions
        if self.executor is not None:
            from .external import ExternalBackend

            backend: Any = ExternalBackend(self.executor)
            backend.begin(self.call, n_workers, stop_on_error)
            return backend, _nothing
        if serial:
            if self.initializer is not None:
                try:
                    self.initializer(*self.initargs)
                except KeyboardInterrupt:
                    raise  # in the calling thread this is a real Ctrl-C
                except BaseException as exc:
                    raise initializer_error(exc, "the serial run") from None
            backend = SerialBackend()
            backend.begin(self.call, n_workers, stop_on_error)
            return backend, _nothing
        if self.threadpool:
            pool: Any = pools.acquire_threads(self.initializer, self.initargs)
            pool.begin(self.call, n_workers, stop_on_error)
            return pool, lambda: pools.release(pool)
        forks = pools.resolve_context(self.method)[0] == "fork"
        payload = _pickle_for_workers(tuple(self.call), "fn, args and kwargs", forks)
        init_blob = None
        if self.initializer is not None:
            init_blob = _pickle_for_workers((self.initializer, self.initargs), "initializer and initargs", forks)
        pool = pools.acquire_processes(self.method, init_blob, self.max_tasks_per_child)
        try:
            pool.begin(payload, n_workers, stop_on_error)
        except BaseException:
            pools.release(pool)
            raise
        return pool, lambda: pools.release(pool)


def _nothing() -> None:
    pass


def _pickle_for_workers(obj: Any, what: str, forks: bool) -> bytes:
    try:
        return dumps(obj, main_by_reference=forks)
    except Exception as exc:
        add_note(exc, f"fastparallel: {what} are sent to worker processes and must be picklable "
                      "(cloudpickle); use threadpool=True to keep them in this process")
        raise


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isnan(value)


def _is_context(method: Any) -> bool:
    """A multiprocessing context, recognised without importing multiprocessing."""
    return all(hasattr(method, name) for name in ("Process", "Pipe", "get_start_method"))


def _check_arguments(
    fn: Any, items: Any, n_workers: Any, threadpool: Any, progress: Any, total: Any, chunksize: Any,
    timeout: Any, pause: Any, method: Any, return_exceptions: Any, max_tasks_per_child: Any,
    initializer: Any, initargs: Any, return_as: Any, executor: Any,
) -> Iterator[Any]:
    """Validate every argument before anything starts; returns ``iter(items)``."""
    if not callable(fn):
        raise TypeError(f"fn must be callable, got {type(fn).__name__}: {fn!r:.60}")
    if n_workers is not None:
        if not _is_int(n_workers):
            raise TypeError(f"n_workers must be an int or None, got {type(n_workers).__name__}")
        if n_workers < 0:
            raise ValueError(f"n_workers must be >= 0 (0 runs serially), got {n_workers}")
    if not isinstance(threadpool, bool):
        raise TypeError(f"threadpool must be True or False, got {threadpool!r:.60}")
    if not (progress is None or isinstance(progress, bool) or callable(progress)):
        raise TypeError(f"progress must be None, a bool or a callable(done, total), got {progress!r:.60}")
    if total is not None and (not _is_int(total) or total < 0):
        raise ValueError(f"total must be a non-negative int or None, got {total!r:.60}")
    if chunksize is not None:
        if not _is_int(chunksize):
            raise TypeError(f"chunksize must be an int or None, got {type(chunksize).__name__}")
        if chunksize < 1:
            raise ValueError(f"chunksize must be >= 1, got {chunksize}")
    if timeout is not None:
        if not _is_number(timeout):
            raise TypeError(f"timeout must be a number of seconds or None, got {timeout!r:.60}")
        if timeout < 0:
            raise ValueError(f"timeout must be >= 0, got {timeout}")
    if not _is_number(pause) or pause < 0:
        raise ValueError(f"pause must be a number of seconds >= 0, got {pause!r:.60}")
    if method is not None and not _is_context(method):
        if not isinstance(method, str):
            raise TypeError(f"method must be a start method name, a multiprocessing context or None, "
                            f"got {method!r:.60}")
        import multiprocessing

        methods = multiprocessing.get_all_start_methods()
        if method not in methods:
            raise ValueError(f"unknown start method {method!r}; use one of {methods}")
    if not isinstance(return_exceptions, bool):
        raise TypeError(f"return_exceptions must be True or False, got {return_exceptions!r:.60}")
    if max_tasks_per_child is not None:
        if not _is_int(max_tasks_per_child) or max_tasks_per_child < 1:
            raise ValueError(f"max_tasks_per_child must be an int >= 1 or None, got {max_tasks_per_child!r:.60}")
        if threadpool:
            raise ValueError("max_tasks_per_child applies to worker processes, not to threadpool=True")
    if initializer is not None and not callable(initializer):
        raise TypeError(f"initializer must be callable or None, got {initializer!r:.60}")
    try:
        iter(initargs)
    except TypeError:
        raise TypeError(f"initargs must be a tuple of arguments, got {initargs!r:.60}") from None
    if return_as not in _RETURN_AS:
        raise ValueError(f"return_as must be one of {_RETURN_AS}, got {return_as!r:.60}")
    if executor is not None and not hasattr(executor, "submit"):
        raise TypeError(f"executor must be a concurrent.futures.Executor or a dask Client, got {executor!r:.60}")
    try:
        return iter(items)
    except TypeError:
        raise TypeError(f"items must be iterable, got {type(items).__name__}: {items!r:.60}") from None
