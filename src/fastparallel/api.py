"""The entry point, :func:`parallel`: its signature and documentation, and collecting results.

Everything else happens below: :class:`~.options.Options` checks the keywords, and
:func:`.dispatch.run` runs the call on the chosen backend.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Iterable, Iterator
from operator import itemgetter
from typing import TYPE_CHECKING, Any, Literal, TypeVar, overload

from fastparallel.backends.runner import Call, is_coroutine_function
from fastparallel.core.dispatch import Piece, run
from fastparallel.options import Flag, Options, ProgressCallback, ReturnAs, Threadpool

if TYPE_CHECKING:
    import multiprocessing.context

    from fastparallel.auto.advice import Advice

__all__ = ["advise", "parallel"]

R = TypeVar("R")


# The keywords of parallel() and advise() (in the signatures, the docstrings' Args and the
# calls that pass them on) are declared once, in options.OPTIONS, and written here by
# tools/generate_options.py.
@overload
def parallel(
    fn: Callable[..., Coroutine[Any, Any, R]],
    items: Iterable[Any],
    /,
    *args: Any,
    n_workers: int | None = None,
    threadpool: Threadpool = False,
    progress: Flag | ProgressCallback = None,
    total: int | None = None,
    chunksize: int | None = None,
    timeout: float | None = None,
    pause: float | None = 0,
    method: str | multiprocessing.context.BaseContext | None = None,
    return_exceptions: bool = False,
    max_tasks_per_child: int | None = None,
    initializer: Callable[..., Any] | None = None,
    initargs: Iterable[Any] = (),
    return_as: Literal["list"] = "list",
    executor: Any = None,
    item_timeout: float | None = None,
    retries: int = 0,
    retry_on: type[BaseException] | tuple[type[BaseException], ...] = Exception,
    retry_delay: float = 0.0,
    inner_threads: int | None = None,
    max_memory: int | str | None = None,
    **kwargs: Any,
) -> list[R]: ...


@overload
def parallel(
    fn: Callable[..., Coroutine[Any, Any, R]],
    items: Iterable[Any],
    /,
    *args: Any,
    n_workers: int | None = None,
    threadpool: Threadpool = False,
    progress: Flag | ProgressCallback = None,
    total: int | None = None,
    chunksize: int | None = None,
    timeout: float | None = None,
    pause: float | None = 0,
    method: str | multiprocessing.context.BaseContext | None = None,
    return_exceptions: bool = False,
    max_tasks_per_child: int | None = None,
    initializer: Callable[..., Any] | None = None,
    initargs: Iterable[Any] = (),
    return_as: Literal["generator", "generator_unordered"],
    executor: Any = None,
    item_timeout: float | None = None,
    retries: int = 0,
    retry_on: type[BaseException] | tuple[type[BaseException], ...] = Exception,
    retry_delay: float = 0.0,
    inner_threads: int | None = None,
    max_memory: int | str | None = None,
    **kwargs: Any,
) -> Iterator[R]: ...


@overload
def parallel(
    fn: Callable[..., R],
    items: Iterable[Any],
    /,
    *args: Any,
    n_workers: int | None = None,
    threadpool: Threadpool = False,
    progress: Flag | ProgressCallback = None,
    total: int | None = None,
    chunksize: int | None = None,
    timeout: float | None = None,
    pause: float | None = 0,
    method: str | multiprocessing.context.BaseContext | None = None,
    return_exceptions: bool = False,
    max_tasks_per_child: int | None = None,
    initializer: Callable[..., Any] | None = None,
    initargs: Iterable[Any] = (),
    return_as: Literal["list"] = "list",
    executor: Any = None,
    item_timeout: float | None = None,
    retries: int = 0,
    retry_on: type[BaseException] | tuple[type[BaseException], ...] = Exception,
    retry_delay: float = 0.0,
    inner_threads: int | None = None,
    max_memory: int | str | None = None,
    **kwargs: Any,
) -> list[R]: ...


@overload
def parallel(
    fn: Callable[..., R],
    items: Iterable[Any],
    /,
    *args: Any,
    n_workers: int | None = None,
    threadpool: Threadpool = False,
    progress: Flag | ProgressCallback = None,
    total: int | None = None,
    chunksize: int | None = None,
    timeout: float | None = None,
    pause: float | None = 0,
    method: str | multiprocessing.context.BaseContext | None = None,
    return_exceptions: bool = False,
    max_tasks_per_child: int | None = None,
    initializer: Callable[..., Any] | None = None,
    initargs: Iterable[Any] = (),
    return_as: Literal["generator", "generator_unordered"],
    executor: Any = None,
    item_timeout: float | None = None,
    retries: int = 0,
    retry_on: type[BaseException] | tuple[type[BaseException], ...] = Exception,
    retry_delay: float = 0.0,
    inner_threads: int | None = None,
    max_memory: int | str | None = None,
    **kwargs: Any,
) -> Iterator[R]: ...


def parallel(
    fn: Callable[..., Any],
    items: Iterable[Any],
    /,
    *args: Any,
    n_workers: int | None = None,
    threadpool: Threadpool = False,
    progress: Flag | ProgressCallback = None,
    total: int | None = None,
    chunksize: int | None = None,
    timeout: float | None = None,
    pause: float | None = 0,
    method: str | multiprocessing.context.BaseContext | None = None,
    return_exceptions: bool = False,
    max_tasks_per_child: int | None = None,
    initializer: Callable[..., Any] | None = None,
    initargs: Iterable[Any] = (),
    return_as: ReturnAs = "list",
    executor: Any = None,
    item_timeout: float | None = None,
    retries: int = 0,
    retry_on: type[BaseException] | tuple[type[BaseException], ...] = Exception,
    retry_delay: float = 0.0,
    inner_threads: int | None = None,
    max_memory: int | str | None = None,
    **kwargs: Any,
) -> list[Any] | Iterator[Any]:
    """Apply ``fn`` to every item of ``items`` in parallel; results in input order.

    ``fn`` is called as ``fn(*args, item, **kwargs)``, exactly like
    ``fastcore.parallel.parallel``, so swapping the import is enough. ``fn`` and
    ``items`` are positional-only: keywords named ``fn`` or ``items`` go to ``fn``.

    A coroutine function (``async def``) runs differently: its items run as tasks on
    an event loop in a helper thread, ``n_workers`` of them at once (16 when None), so
    it works from plain code and from inside a running event loop (a notebook cell);
    ``threadpool`` is ignored, and ``method``, ``max_tasks_per_child``, ``initializer``
    and ``executor`` are refused. Inside a coroutine of your own, prefer
    :func:`~fastparallel.parallel_async`, which does not block the running loop.

    Args:
        fn: the function to call. On processes it may be a lambda, a closure or defined
            in a notebook: it is pickled once per call (with plain pickle where it can,
            else cloudpickle) and sent to each worker once; a warm worker that already
            has the same ``fn``, ``args`` and ``kwargs`` is not sent them again.
        items: any iterable, read lazily; generators and infinite iterators work.
        *args: positional arguments passed before the item.
        n_workers: workers to use. None: the CPUs this process may use (threads: a few more,
            at most 32; coroutines: 16 at once). 0: run serially in the calling thread.
            Never more workers than items.
        threadpool: True (or 1) for threads (I/O, C code that releases the GIL), False (or
            0, None) for processes (pure-Python CPU work), or "auto": run the first items on
            two threads of this process for a fraction of a second, measure them, and run
            the rest serially, on threads or on processes, whichever the measurements
            predict to finish first (the results of those first items are kept; the choice
            and its reason are logged at INFO and shown in the progress bar). ``n_workers``
            then applies to the chosen mode (None: its default). Not with ``executor``,
            ``pause`` or a coroutine function.
        progress: True (or 1) for a progress bar (HTML in a notebook, a bar in a terminal, a
            few plain lines in a log); a callable ``progress(done, total)`` to report
            yourself; None/False/0 for none.
        total: the number of items, when ``len(items)`` does not tell (for the ETA).
        chunksize: items per task sent to a worker. None adapts it to the measured time per
            item.
        timeout: seconds for the whole call; past it, ``ParallelTimeoutError`` (a
            ``TimeoutError``) is raised and busy worker processes are killed. None,
            ``math.inf`` or any value of ``1e9`` seconds (about 31 years) or more: no limit.
        pause: at least this many seconds between the starts of any two items, over all
            workers (each chunk then holds one item). None: 0. It must stay below ``1e9``
            seconds: ``math.inf`` would never start a second item.
        method: start method for processes: None (on Linux, forks of the caller when that is
            safe, else of fastparallel's template process; the template on macOS; else
            'spawn'), 'template', 'forkserver', 'spawn', 'fork' or a multiprocessing
            context. None reads the environment variable ``FASTPARALLEL_METHOD`` (the same
            names) at each call.
        return_exceptions: put an item's exception in its result slot instead of raising it.
        max_tasks_per_child: replace a worker process after it ran this many items.
        initializer: called as ``initializer(*initargs)`` once in each worker.
        initargs: arguments for ``initializer``.
        return_as: "list" (default), "generator" (a lazy iterator in input order, with
            bounded memory) or "generator_unordered" (in completion order).
        executor: run on an external ``concurrent.futures.Executor`` or a
            ``dask.distributed.Client`` instead of a local pool.
        item_timeout: seconds one item may run; past it, that item fails with
            ``ItemTimeoutError`` and the others go on. A worker process running it is killed
            and replaced; a thread is abandoned (it cannot be killed) and replaced;
            serially, the item fails when it returns. Not with ``executor``. None,
            ``math.inf`` or ``1e9`` seconds or more: no limit.
        retries: run an item that failed again, up to this many more times, when its error
            is an instance of ``retry_on`` (crashes and item timeouts included).
        retry_on: an exception class or a tuple of them, as in an ``except`` clause.
        retry_delay: seconds before the first retry of an item; each later retry waits twice
            as long as the one before (plus up to 10% of random jitter), up to ``1e9``
            seconds. Waiting items hold no worker.
        inner_threads: threads each worker process's native pools may use (BLAS, OpenMP,
            MKL, numexpr...). None: ``max(1, num_cpus() // n_workers)`` for process workers,
            and threads (``threadpool=True``) are left alone; a limit already set in the
            environment (``OMP_NUM_THREADS`` and friends) wins. An int >= 1 sets it. Not
            with ``executor`` or a coroutine function.
        max_memory: the memory the workers of one call may use together: bytes, or a string
            such as "12GB", "500MiB" or "1.5 GiB" (kB, MB, GB, TB are powers of 1000; KiB,
            MiB, GiB, TiB of 1024). None: what the machine has available (``MemAvailable``,
            or the cgroup's limit minus its usage where lower). Each worker's memory is
            measured as items run, and fewer items run at once (down to one) when the
            measured need does not fit (said at INFO). A worker the OOM killer kills is
            reported as out of memory (``WorkerDiedError``) and its item runs again once,
            fewer at a time (with ``retries``: as one of its attempts). Only for process
            workers: not with ``threadpool=True``, ``executor`` or a coroutine function.
        **kwargs: keyword arguments passed to ``fn``.

    An error that is final (no retries left, or not a ``retry_on``) ends the call, unless
    ``return_exceptions``; after several attempts it carries a note saying how many
    were made and what the earlier ones raised.

    Returns:
        A list of results in input order, or an iterator of them (``return_as``).

    Raises:
        TypeError, ValueError: bad arguments, before any worker starts.
        Exception: the first exception raised by ``fn``, with its original type, the
            worker's traceback as ``__cause__`` and a note naming the item.
        WorkerDiedError: a worker process died while running an item.
        ItemTimeoutError: an item ran longer than ``item_timeout``.
        ParallelTimeoutError: ``timeout`` passed.

    Example:
        >>> from fastparallel import parallel
        >>> parallel(pow, [1, 2, 3], 2, threadpool=True)   # pow(2, item)
        [2, 4, 8]
        >>> parallel(lambda x: x * 10, range(4), n_workers=0)
        [0, 10, 20, 30]
        >>> async def double(x):
        ...     return 2 * x
        >>> parallel(double, [1, 2, 3], n_workers=2)
        [2, 4, 6]
    """
    if not callable(fn):
        raise TypeError(f"fn must be callable, got {type(fn).__name__}: {fn!r:.60}")
    options = Options(
        n_workers=n_workers,
        threadpool=threadpool,
        progress=progress,
        total=_length(items) if total is None else total,
        chunksize=chunksize,
        timeout=timeout,
        pause=pause,
        method=method,
        return_exceptions=return_exceptions,
        max_tasks_per_child=max_tasks_per_child,
        initializer=initializer,
        initargs=initargs,
        return_as=return_as,
        executor=executor,
        item_timeout=item_timeout,
        retries=retries,
        retry_on=retry_on,
        retry_delay=retry_delay,
        inner_threads=inner_threads,
        max_memory=max_memory,
        coroutine=is_coroutine_function(fn),
    )
    return _returned(Call(fn, args, kwargs), items, options, return_as)


def advise(
    fn: Callable[..., Any],
    items: Iterable[Any],
    /,
    *args: Any,
    n_workers: int | None = None,
    total: int | None = None,
    inner_threads: int | None = None,
    max_memory: int | str | None = None,
    max_seconds: float = 2.0,
    **kwargs: Any,
) -> Advice:
    """Run ``fn`` on a sample of ``items`` and predict the whole run serially, on threads
    and on processes; recommend one.

    ``fn`` is called as in :func:`~fastparallel.parallel` (``fn(*args, item, **kwargs)``)
    on the first items, alone and then on two threads of this process, for up to
    ``0.6 * max_seconds``; the time per item, the share of it the GIL is held, the cores
    an item keeps busy and the pickling of an item and a result are measured, and
    starting worker processes and a round trip to them are timed in the time left. The
    whole call takes at most about ``max_seconds``. The prediction for each mode is
    Amdahl's law with these overheads; ``threadpool="auto"`` chooses with the same model.

    The sampled items of an iterator are consumed (the others are not read); their
    results are not returned. An item still running when the time is up goes on in its
    thread, its result dropped. Timing the start leaves a warm process pool, as any
    ``parallel()`` call on processes does.

    Args:
        fn: the function, called as ``fn(*args, item, **kwargs)``.
        items: any iterable; an iterator is consumed only as far as it is sampled.
        *args: positional arguments passed before the item.
        n_workers: workers to predict threads and processes with (None: each mode's default,
            as ``parallel()`` would use).
        total: the number of items, when ``len(items)`` does not tell.
        inner_threads: threads each worker's native pools may use, as in ``parallel()``.
        max_memory: the memory the workers may use together, as in ``parallel()``.
        max_seconds: how long advise() may take, about.
        **kwargs: keyword arguments passed to ``fn``.

    Example:
        >>> from fastparallel import advise
        >>> advice = advise(pow, range(1000), 2, max_seconds=0.5)   # pow(2, item)
        >>> advice.recommended in ("serial", "threads", "processes")
        True
        >>> sorted(advice.predicted)   # seconds predicted for the 1,000 items in each mode
        ['processes', 'serial', 'threads']
    """
    from fastparallel.auto.advice import check_advise_arguments, measure_advice
    from fastparallel.core import pools

    options = check_advise_arguments(
        fn,
        max_seconds,
        {
            "n_workers": n_workers,
            "total": total,
            "inner_threads": inner_threads,
            "max_memory": max_memory,
        },
    )
    return measure_advice(
        Call(fn, args, kwargs),
        items,
        options,
        max_seconds=max_seconds,
        run=parallel,
        idle_pool=pools.has_idle("processes"),
    )


def _returned(
    call: Call, items: Iterable[Any], options: Options, return_as: ReturnAs
) -> list[Any] | Iterator[Any]:
    """Run ``call`` over ``items``; its results as ``return_as`` says (a list or an iterator)."""
    pieces = run(
        call,
        _iterate(items),
        options,
        ordered=return_as == "generator",
        streaming=return_as != "list",
    )
    if return_as == "list":
        return _collect(pieces)
    return _stream(pieces)


def _iterate(items: Iterable[Any]) -> Iterator[Any]:
    try:
        return iter(items)
    except TypeError:
        raise TypeError(
            f"items must be iterable, got {type(items).__name__}: {items!r:.60}"
        ) from None


def _length(items: Iterable[Any]) -> int | None:
    try:
        return len(items)  # type: ignore[arg-type]
    except (TypeError, AttributeError):
        return None


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
