"""The options of one :func:`~fastparallel.parallel` call, checked once, before anything starts.

:class:`Options` holds every keyword of ``parallel()`` except ``fn``, ``items``, ``args``
and ``kwargs``. Building one validates each value, rejects combinations that the chosen
backend could not honour (rather than ignoring them silently), and resolves the defaults
(``n_workers=None``). Everything below the entry point takes an ``Options``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

from fastparallel.cpus import default_workers

if TYPE_CHECKING:
    import multiprocessing.context

__all__ = ["BackendName", "Flag", "Mode", "Options", "ProgressCallback", "ReturnAs", "Threadpool"]

BackendName = Literal["serial", "threads", "processes", "external", "coroutines"]
Mode = Literal["serial", "threads", "processes"]
"""Where ``threadpool="auto"`` and :func:`~fastparallel.advise` may run the work."""
ReturnAs = Literal["list", "generator", "generator_unordered"]
"""``return_as=``: a list, a lazy iterator in input order, or one in completion order."""
RETURN_AS = ("list", "generator", "generator_unordered")
Flag = bool | Literal[0, 1] | None
"""A yes/no option as fastcore accepts it: True/False, 1/0, or None for no."""
Threadpool = bool | Literal[0, 1, "auto"] | None
"""``threadpool=``: a :data:`Flag`, or "auto" to measure the first items and choose."""
ProgressCallback = Callable[[int, "int | None"], Any]
"""``progress=`` as a function: called as ``progress(done, total)`` after each finished
chunk, in the calling thread (``total`` is None when the number of items is unknown)."""


class Option(NamedTuple):
    """One keyword of :func:`~fastparallel.parallel`, declared once in :data:`OPTIONS`.

    ``tools/generate_options.py`` writes from these the keywords of ``parallel()`` (its
    overloads, its implementation, its docstring's Args and its ``Options(...)`` call), of
    :func:`~fastparallel.advise` (those with ``advise`` text) and the fields of
    :class:`Options`; a unit test fails when the written parts are out of date.
    """

    name: str
    hint: str  # the type hint in parallel()'s signature, as source text
    default: Any  # the default, written in the signature by its repr (classes by name)
    doc: str  # the Args entry of parallel()'s docstring, one paragraph (wrapped when written)
    stored: str = ""  # the field's type once checked and normalised, when not ``hint``
    advise: str = ""  # the Args entry of advise(), for the options advise() takes too


OPTIONS: tuple[Option, ...] = (
    Option(
        "n_workers",
        "int | None",
        None,
        "workers to use. None: the CPUs this process may use (threads: a few more, at most "
        "32; coroutines: 16 at once). 0: run serially in the calling thread. Never more "
        "workers than items.",
        advise="workers to predict threads and processes with (None: each mode's default, "
        "as ``parallel()`` would use).",
    ),
    Option(
        "threadpool",
        "Threadpool",
        False,
        "True (or 1) for threads (I/O, C code that releases the GIL), False (or 0, None) for "
        'processes (pure-Python CPU work), or "auto": run the first items on two threads of '
        "this process for a fraction of a second, measure them, and run the rest serially, on "
        "threads or on processes, whichever the measurements predict to finish first (the "
        "results of those first items are kept; the choice and its reason are logged at INFO "
        "and shown in the progress bar). ``n_workers`` then applies to the chosen mode (None: "
        "its default). Not with ``executor``, ``pause`` or a coroutine function.",
        stored='bool | Literal["auto"]',
    ),
    Option(
        "progress",
        "Flag | ProgressCallback",
        None,
        "True (or 1) for a progress bar (HTML in a notebook, a bar in a terminal, a few plain "
        "lines in a log); a callable ``progress(done, total)`` to report yourself; "
        "None/False/0 for none.",
        stored="bool | ProgressCallback",
    ),
    Option(
        "total",
        "int | None",
        None,
        "the number of items, when ``len(items)`` does not tell (for the ETA).",
        advise="the number of items, when ``len(items)`` does not tell.",
    ),
    Option(
        "chunksize",
        "int | None",
        None,
        "items per task sent to a worker. None adapts it to the measured time per item.",
    ),
    Option(
        "timeout",
        "float | None",
        None,
        "seconds for the whole call; past it, ``ParallelTimeoutError`` (a ``TimeoutError``) "
        "is raised and busy worker processes are killed. None, ``math.inf`` or any value of "
        "``1e9`` seconds (about 31 years) or more: no limit.",
    ),
    Option(
        "pause",
        "float | None",
        0,
        "at least this many seconds between the starts of any two items, over all workers "
        "(each chunk then holds one item). None: 0. It must stay below ``1e9`` seconds: "
        "``math.inf`` would never start a second item.",
        stored="float",
    ),
    Option(
        "method",
        "str | multiprocessing.context.BaseContext | None",
        None,
        "start method for processes: None (on Linux, forks of the caller when that is "
        "safe, else of fastparallel's template process; the template on macOS; else "
        "'spawn'), 'template', 'forkserver', 'spawn', 'fork' or a multiprocessing "
        "context. None reads the environment variable ``FASTPARALLEL_METHOD`` (the same "
        "names) at each call.",
    ),
    Option(
        "return_exceptions",
        "bool",
        False,
        "put an item's exception in its result slot instead of raising it.",
    ),
    Option(
        "max_tasks_per_child",
        "int | None",
        None,
        "replace a worker process after it ran this many items.",
    ),
    Option(
        "initializer",
        "Callable[..., Any] | None",
        None,
        "called as ``initializer(*initargs)`` once in each worker.",
    ),
    Option(
        "initargs",
        "Iterable[Any]",
        (),
        "arguments for ``initializer``.",
        stored="tuple[Any, ...]",
    ),
    Option(
        "return_as",
        "ReturnAs",
        "list",
        '"list" (default), "generator" (a lazy iterator in input order, with bounded memory) '
        'or "generator_unordered" (in completion order).',
    ),
    Option(
        "executor",
        "Any",
        None,
        "run on an external ``concurrent.futures.Executor`` or a ``dask.distributed.Client`` "
        "instead of a local pool.",
    ),
    Option(
        "item_timeout",
        "float | None",
        None,
        "seconds one item may run; past it, that item fails with ``ItemTimeoutError`` and the "
        "others go on. A worker process running it is killed and replaced; a thread is "
        "abandoned (it cannot be killed) and replaced; serially, the item fails when it "
        "returns. Not with ``executor``. None, ``math.inf`` or ``1e9`` seconds or more: no "
        "limit.",
    ),
    Option(
        "retries",
        "int",
        0,
        "run an item that failed again, up to this many more times, when its error is an "
        "instance of ``retry_on`` (crashes and item timeouts included).",
    ),
    Option(
        "retry_on",
        "type[BaseException] | tuple[type[BaseException], ...]",
        Exception,
        "an exception class or a tuple of them, as in an ``except`` clause.",
    ),
    Option(
        "retry_delay",
        "float",
        0.0,
        "seconds before the first retry of an item; each later retry waits twice as long as "
        "the one before (plus up to 10% of random jitter), up to ``1e9`` seconds. Waiting "
        "items hold no worker.",
    ),
    Option(
        "inner_threads",
        "int | None",
        None,
        "threads each worker process's native pools may use (BLAS, OpenMP, MKL, numexpr...). "
        "None: ``max(1, num_cpus() // n_workers)`` for process workers, and threads "
        "(``threadpool=True``) are left alone; a limit already set in the environment "
        "(``OMP_NUM_THREADS`` and friends) wins. An int >= 1 sets it. Not with ``executor`` "
        "or a coroutine function.",
        advise="threads each worker's native pools may use, as in ``parallel()``.",
    ),
    Option(
        "max_memory",
        "int | str | None",
        None,
        "the memory the workers of one call may use together: bytes, or a string such as "
        '"12GB", "500MiB" or "1.5 GiB" (kB, MB, GB, TB are powers of 1000; KiB, MiB, GiB, TiB '
        "of 1024). None: what the machine has available (``MemAvailable``, or the cgroup's "
        "limit minus its usage where lower). Each worker's memory is measured as items run, "
        "and fewer items run at once (down to one) when the measured need does not fit (said "
        "at INFO). A worker the OOM killer kills is reported as out of memory "
        "(``WorkerDiedError``) and its item runs again once, fewer at a time (with "
        "``retries``: as one of its attempts). Only for process workers: not with "
        "``threadpool=True``, ``executor`` or a coroutine function.",
        stored="int | None",
        advise="the memory the workers may use together, as in ``parallel()``.",
    ),
)


# Options that only mean something for local worker processes.
_PROCESS_ONLY = ("method", "max_tasks_per_child")
# Options for the workers fastparallel starts (processes, or threads when given): an
# executor's workers and a coroutine's event loop are not fastparallel's to limit.
_LOCAL_WORKERS_ONLY = ("inner_threads", "max_memory")
# Coroutines at once when n_workers=None: fastcore's parallel_async default, so that moving
# between parallel(async_fn, ...) and parallel_async(...) keeps the load on a server the same.
COROUTINE_WORKERS = 16


# Seconds that no call will see pass (about 31.7 years): a ``timeout`` or ``item_timeout``
# this long, ``math.inf`` included, means no limit; a ``pause`` or ``retry_delay`` this long
# would never start the next item, so it is refused. Below it, waits are safe: the
# dispatcher waits at most an hour at a time, within every platform's wait limits.
FOREVER = 1e9


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isnan(value)


def check_count(name: str, value: Any, minimum: int, *, none: str = "", why: str = "") -> None:
    """Refuse ``value`` unless it is an int >= ``minimum`` (or None, when ``none`` says
    what None means). The one rule for ``n_workers``, ``chunksize``, ``total`` and the
    other counts of ``parallel()``, ``parallel_async()`` and ``advise()``.

    Example:
        >>> check_count("n_workers", 0, 1, why="items awaited at once")
        Traceback (most recent call last):
        ...
        ValueError: n_workers must be an int >= 1 (items awaited at once), got 0
    """
    if value is None and none:
        return
    expected = f"an int >= {minimum}" + (f" ({why})" if why else "")
    if none:
        expected += f", or None ({none})"
    if not _is_int(value):
        raise TypeError(f"{name} must be {expected}, got {type(value).__name__}: {value!r:.60}")
    if value < minimum:
        raise ValueError(f"{name} must be {expected}, got {value}")


def check_seconds(
    name: str, value: Any, *, none: str = "", zero: bool = True, limit: bool = False
) -> float | None:
    """``value`` as seconds, refused unless it is a number >= 0 (> 0 unless ``zero``), or
    None when ``none`` says what None means; NaN is refused.

    With ``limit`` (a ``timeout``), :data:`FOREVER` seconds or more, ``math.inf``
    included, mean no limit: None is returned. Otherwise (a ``pause``, a delay) such a
    value would wait forever and is refused.

    Example:
        >>> check_seconds("timeout", float("inf"), none="no limit", limit=True) is None
        True
        >>> check_seconds("pause", 0.5)
        0.5
    """
    if value is None and none:
        return None
    expected = "a number of seconds " + (">= 0" if zero else "> 0")
    if none:
        expected += f", or None ({none})"
    if not _is_number(value):
        raise TypeError(f"{name} must be {expected}, got {value!r:.60}")
    if value < 0 or (value == 0 and not zero):
        raise ValueError(f"{name} must be {expected}, got {value}")
    if value >= FOREVER:
        if limit:
            return None
        raise ValueError(
            f"{name}={value} seconds would wait forever; {name} must be a finite number of "
            f"seconds below {FOREVER:.0e}"
        )
    seconds: float = value  # as given: an int stays an int in messages
    return seconds


_MEMORY_UNITS = {
    "b": 1,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "tb": 1000**4,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
    "tib": 1024**4,
}


def memory_bytes(name: str, value: Any) -> int | None:
    """``value`` in bytes: an int >= 1, or a string of a number and a unit (kB, MB, GB, TB:
    powers of 1000; KiB, MiB, GiB, TiB: powers of 1024; B or none: bytes; any case,
    spaces allowed); None stays None (the memory available).

    Example:
        >>> memory_bytes("max_memory", "1.5 GiB"), memory_bytes("max_memory", "12GB")
        (1610612736, 12000000000)
    """
    if value is None:
        return None
    expected = (
        'bytes (an int >= 1) or a string such as "12GB", "500MiB" or "1.5 GiB" (units: B, '
        "kB, MB, GB, TB in powers of 1000; KiB, MiB, GiB, TiB in powers of 1024), or None "
        "(what the machine has available)"
    )
    if _is_int(value):
        if value < 1:
            raise ValueError(f"{name} must be {expected}, got {value}")
        return int(value)
    if not isinstance(value, str):
        raise TypeError(f"{name} must be {expected}, got {type(value).__name__}: {value!r:.60}")
    text = value.strip().lower()
    digits = text.rstrip("bikmgt ")
    unit = text[len(digits) :].strip() or "b"
    try:
        number = float(digits)
    except ValueError:
        number = math.nan
    if unit not in _MEMORY_UNITS or not (0 < number < math.inf):
        raise ValueError(f"{name} must be {expected}, got {value!r:.60}")
    size = round(number * _MEMORY_UNITS[unit])
    if size < 1:
        raise ValueError(f"{name} must be at least one byte, got {value!r:.60}")
    return size


def _loose_flag(name: str, value: Any, expected: str = "True or False (or 1, 0, None)") -> bool:
    """True or False from fastcore's loose values: a bool, 1 or 0, or None (no)."""
    if value is None:
        return False
    if isinstance(value, bool) or (type(value) is int and value in (0, 1)):
        return bool(value)
    raise TypeError(f"{name} must be {expected}, got {value!r:.60}")


METHOD_VARIABLE = "FASTPARALLEL_METHOD"


def method_from_environment() -> str | None:
    """The start method :data:`METHOD_VARIABLE` asks for (None: unset or empty), checked.

    Example:
        >>> import os
        >>> os.environ.pop("FASTPARALLEL_METHOD", None) and None
        >>> method_from_environment() is None
        True
    """
    value = os.environ.get(METHOD_VARIABLE, "").strip()
    if not value:
        return None
    methods = _start_methods()
    if value not in methods:
        raise ValueError(
            f"{METHOD_VARIABLE}={value!r} is not a start method: use one of {methods}, "
            f"or leave it unset (fork the caller when that is safe, else the template)"
        )
    return value


def _start_methods() -> list[str]:
    """The names ``method=`` and :data:`METHOD_VARIABLE` accept here."""
    import multiprocessing

    methods = multiprocessing.get_all_start_methods()
    if "fork" in methods:
        methods.insert(methods.index("fork") + 1, "template")  # fastparallel's own
    return methods


def _is_context(method: Any) -> bool:
    """A multiprocessing context, recognised without importing multiprocessing."""
    return all(hasattr(method, name) for name in ("Process", "Pipe", "get_start_method"))


class Options:
    """The validated keywords of one ``parallel()`` call (see its docstring for each).

    ``n_workers`` is resolved: after construction it is the number of workers to use
    (0 runs serially; for a coroutine function, the number of its items running at
    once), never None, except with ``executor=``, whose own size the dispatcher asks for
    (:func:`fastparallel.backends.registry.default_workers`). ``backend`` names where chunks run. fastcore's loose values are
    normalised: ``threadpool`` is a bool (or "auto"), ``progress`` a bool or a callable,
    ``pause`` a float.

    With ``threadpool="auto"`` the mode is not chosen yet: ``n_workers`` stays as given
    (None: the chosen mode's default) and :meth:`decided` gives the options of the mode
    the first items' measurements chose.

    The fields are the annotated class attributes below: the keywords declared in
    :data:`OPTIONS` (with their defaults there), and ``coroutine``; an ``Options`` is
    frozen once built. (A plain class rather than a dataclass: importing
    :mod:`dataclasses` costs every script several milliseconds.)

    Example:
        >>> Options(n_workers=0).backend
        'serial'
        >>> Options(threadpool=True, n_workers=3).n_workers
        3
    """

    # The keywords of parallel(), checked and normalised (defaults: OPTIONS), as
    # written by tools/generate_options.py from OPTIONS.
    n_workers: int | None
    threadpool: bool | Literal["auto"]
    progress: bool | ProgressCallback
    total: int | None
    chunksize: int | None
    timeout: float | None
    pause: float
    method: str | multiprocessing.context.BaseContext | None
    return_exceptions: bool
    max_tasks_per_child: int | None
    initializer: Callable[..., Any] | None
    initargs: tuple[Any, ...]
    return_as: ReturnAs
    executor: Any
    item_timeout: float | None
    retries: int
    retry_on: type[BaseException] | tuple[type[BaseException], ...]
    retry_delay: float
    inner_threads: int | None
    max_memory: int | None
    # Not keywords of parallel():
    coroutine: bool = False  # fn is a coroutine function (api.py tells): its items run on a loop
    backend: BackendName = "serial"  # derived, not given

    def __init__(self, **given: Any) -> None:
        unknown = given.keys() - _FIELDS
        if unknown:
            raise TypeError(
                f"Options() got unexpected keyword arguments: {', '.join(sorted(unknown))}"
            )
        for name in _FIELDS:
            self._set(name, given.get(name, _DEFAULTS[name]))
        self._normalise_loose_values()
        self._check_workers_and_flags()
        self._check_numbers()
        self._check_retries()
        check_count("inner_threads", self.inner_threads, 1, none="a share of the CPUs")
        self._set("max_memory", memory_bytes("max_memory", self.max_memory))
        self._check_method_and_initializer()
        self._check_backend_fit()
        self._set("initargs", tuple(self.initargs))
        if self.auto:
            return  # the backend and n_workers are decided once the first items are measured
        backend: BackendName
        if self.executor is not None:
            backend = "external"
        elif self.coroutine:
            backend = "coroutines"
        elif self.n_workers == 0:
            backend = "serial"
        else:
            backend = "threads" if self.threadpool else "processes"
        self._set("backend", backend)
        if backend == "processes" and self.method is None:
            self._set("method", method_from_environment())
        if (
            self.n_workers is None and self.executor is None
        ):  # an executor's: the dispatcher asks it
            self._set("n_workers", self._default_workers())
        elif self.coroutine and self.n_workers == 0:
            self._set("n_workers", 1)  # one item at a time, on the event loop

    def _set(self, name: str, value: Any) -> None:
        object.__setattr__(self, name, value)  # frozen, but normalised once here

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"Options are frozen: cannot set {name!r}")

    def __repr__(self) -> str:
        changed = ", ".join(
            f"{name}={getattr(self, name)!r}"
            for name in (*_FIELDS, "backend")
            if getattr(self, name) is not _DEFAULTS[name]
        )
        return f"Options({changed})"

    def replace(self, **changes: Any) -> Options:
        """New options: these, with ``changes``, checked and resolved again."""
        return Options(**{**{name: getattr(self, name) for name in _FIELDS}, **changes})

    @property
    def auto(self) -> bool:
        """``threadpool="auto"``: the mode is chosen by measuring the first items."""
        return self.threadpool == "auto"

    def decided(self, mode: Mode) -> Options:
        """These options with ``threadpool="auto"`` resolved to ``mode``.

        ``n_workers`` keeps its value (None: the mode's default; 0 for serial); the
        options that only concern worker processes are dropped unless processes run.
        """
        return self.replace(
            threadpool=mode == "threads",
            n_workers=0 if mode == "serial" else self.n_workers,
            method=self.method if mode == "processes" else None,
            max_tasks_per_child=self.max_tasks_per_child if mode == "processes" else None,
            max_memory=self.max_memory if mode == "processes" else None,
        )

    def _normalise_loose_values(self) -> None:
        """fastcore's loose values: flags given as 1/0/None, ``pause=None``."""
        if self.threadpool != "auto":
            expected = 'True or False (or 1, 0, None), or "auto"'
            self._set("threadpool", _loose_flag("threadpool", self.threadpool, expected))
        if not callable(self.progress):
            expected = "True or False (or 1, 0, None) or a callable(done, total)"
            self._set("progress", _loose_flag("progress", self.progress, expected))
        if self.pause is None:
            self._set("pause", 0.0)

    def _default_workers(self) -> int:
        if self.coroutine:
            return COROUTINE_WORKERS
        return default_workers(bool(self.threadpool))

    @property
    def stop_on_error(self) -> bool:
        """Whether the first error ends the call (else it goes in its item's slot)."""
        return not self.return_exceptions

    def _check_workers_and_flags(self) -> None:
        check_count("n_workers", self.n_workers, 0, none="the default", why="0 runs serially")
        if not isinstance(self.return_exceptions, bool):
            raise TypeError(
                f"return_exceptions must be True or False, got {self.return_exceptions!r:.60}"
            )
        if self.return_as not in RETURN_AS:
            raise ValueError(f"return_as must be one of {RETURN_AS}, got {self.return_as!r:.60}")

    def _check_numbers(self) -> None:
        check_count("total", self.total, 0, none="unknown")
        check_count("chunksize", self.chunksize, 1, none="adapted to the time per item")
        self._set("timeout", check_seconds("timeout", self.timeout, none="no limit", limit=True))
        pause = check_seconds("pause", self.pause)  # None was normalised to 0 already
        self._set("pause", float(pause or 0))
        check_count("max_tasks_per_child", self.max_tasks_per_child, 1, none="no limit")

    @property
    def stop_chunk_on_error(self) -> bool:
        """Whether a worker stops running its chunk at the first error: only when that
        error ends the call for sure (fail-fast and no retries)."""
        return self.stop_on_error and not self.retries

    def _check_retries(self) -> None:
        item_timeout = check_seconds(
            "item_timeout", self.item_timeout, none="no limit", zero=False, limit=True
        )
        self._set("item_timeout", item_timeout)
        check_count("retries", self.retries, 0, why="extra attempts per item")
        check_seconds("retry_delay", self.retry_delay)
        classes = self.retry_on if isinstance(self.retry_on, tuple) else (self.retry_on,)
        if not classes or not all(
            isinstance(c, type) and issubclass(c, BaseException) for c in classes
        ):
            raise TypeError(
                "retry_on must be an exception class or a tuple of them (as in an except clause), "
                f"got {self.retry_on!r:.60}"
            )

    def _check_method_and_initializer(self) -> None:
        method = self.method
        if method is not None and not _is_context(method):
            if not isinstance(method, str):
                raise TypeError(
                    f"method must be a start method name, a multiprocessing context or None, "
                    f"got {method!r:.60}"
                )
            methods = _start_methods()
            if method not in methods:
                raise ValueError(f"unknown start method {method!r}; use one of {methods}")
        if self.initializer is not None and not callable(self.initializer):
            raise TypeError(f"initializer must be callable or None, got {self.initializer!r:.60}")
        try:
            iter(self.initargs)
        except TypeError:
            raise TypeError(
                f"initargs must be a tuple of arguments, got {self.initargs!r:.60}"
            ) from None

    def _check_auto(self) -> None:
        """``threadpool="auto"`` runs the first items on threads of this process to choose
        serial, threads or processes; refuse what cannot take part in that."""
        refused = [
            name
            for name, given in (
                ("executor", self.executor is not None),
                ("pause", bool(self.pause)),
            )
            if given
        ]
        if self.coroutine:
            raise ValueError(
                'threadpool="auto" cannot be used with a coroutine function: its items always run '
                "as tasks on an event loop; leave threadpool out"
            )
        if refused:
            raise ValueError(
                f'{", ".join(refused)} cannot be used with threadpool="auto", which measures the '
                "first items on two threads of this process and then chooses serial, threads or "
                "processes; choose the mode yourself (threadpool=True for rate-limited calls with "
                "pause) or leave these out"
            )

    def _check_backend_fit(self) -> None:
        """Refuse options that the chosen backend would otherwise silently ignore."""
        if self.auto:
            self._check_auto()
            return
        given = [name for name in _PROCESS_ONLY if getattr(self, name) is not None]
        limits = [name for name in _LOCAL_WORKERS_ONLY if getattr(self, name) is not None]
        if self.coroutine:
            given += limits
            if self.initializer is not None:
                given.append("initializer")
            if self.executor is not None:
                given.append("executor")
            if given:
                raise ValueError(
                    f"{', '.join(given)} cannot be used with a coroutine function: its items run as "
                    "tasks on an event loop in this process; leave it out (set up state inside the "
                    "coroutine, or pass it as an argument)"
                )
        elif self.executor is not None:
            if not hasattr(self.executor, "submit"):
                raise TypeError(
                    "executor must be a concurrent.futures.Executor or a dask Client, "
                    f"got {self.executor!r:.60}"
                )
            if self.initializer is not None:
                given.append("initializer")
            if self.item_timeout is not None:
                given.append("item_timeout")
            given += limits
            if given:
                raise ValueError(
                    f"{', '.join(given)} cannot be used with executor=: the executor starts and "
                    "manages its own workers, so fastparallel can neither set them up, nor tell "
                    "when an item starts there, nor stop it, nor limit their threads or memory; "
                    "configure the workers there (put a timeout inside fn), or leave executor=None"
                )
        elif self.threadpool and self.n_workers != 0:
            if self.max_memory is not None:  # threads share one process: no item's own RSS
                given.append("max_memory")
            if given:
                raise ValueError(
                    f"{', '.join(given)} applies to worker processes, not to threadpool=True"
                )


_DEFAULTS: dict[str, Any] = {
    **{option.name: option.default for option in OPTIONS},
    "coroutine": False,
    "backend": "serial",
}
_FIELDS = (*(option.name for option in OPTIONS), "coroutine")
