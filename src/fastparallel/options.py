"""The options of one :func:`~fastparallel.parallel` call, checked once, before anything starts.

:class:`Options` holds every keyword of ``parallel()`` except ``fn``, ``items``, ``args``
and ``kwargs``. Building one validates each value, rejects combinations that the chosen
backend could not honour (rather than ignoring them silently), and resolves the defaults
(``n_workers=None``). Everything below the entry point takes an ``Options``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Literal

from fastparallel.cpus import default_workers

if TYPE_CHECKING:
    import multiprocessing.context

__all__ = ["BackendName", "Flag", "Mode", "Options", "ProgressCallback", "ReturnAs", "Threadpool"]

BackendName = Literal["serial", "threads", "processes", "external", "coroutines"]
Mode = Literal["serial", "threads", "processes"]
"""Where ``threadpool="auto"`` and :func:`~fastparallel.advise` may run the work."""
ReturnAs = Literal["list", "generator", "generator_unordered"]
RETURN_AS = ("list", "generator", "generator_unordered")
Flag = bool | Literal[0, 1] | None
"""A yes/no option as fastcore accepts it: True/False, 1/0, or None for no."""
Threadpool = bool | Literal[0, 1, "auto"] | None
"""``threadpool=``: a :data:`Flag`, or "auto" to measure the first items and choose."""
ProgressCallback = Callable[[int, "int | None"], Any]
"""``progress=`` as a function: called as ``progress(done, total)`` after each finished
chunk, in the calling thread (``total`` is None when the number of items is unknown)."""
# Options that only mean something for local worker processes.
_PROCESS_ONLY = ("method", "max_tasks_per_child")
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
    return value


def _loose_flag(name: str, value: Any, expected: str = "True or False (or 1, 0, None)") -> bool:
    """True or False from fastcore's loose values: a bool, 1 or 0, or None (no)."""
    if value is None:
        return False
    if isinstance(value, bool) or (type(value) is int and value in (0, 1)):
        return bool(value)
    raise TypeError(f"{name} must be {expected}, got {value!r:.60}")


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

    The fields are the annotated class attributes below, with their defaults; an
    ``Options`` is frozen once built. (A plain class rather than a dataclass: importing
    :mod:`dataclasses` costs every script several milliseconds.)

    Example:
        >>> Options(n_workers=0).backend
        'serial'
        >>> Options(threadpool=True, n_workers=3).n_workers
        3
    """

    n_workers: int | None = None
    threadpool: Threadpool = False  # a bool, or "auto", after construction
    progress: Flag | ProgressCallback = None  # a bool or a callable after construction
    total: int | None = None
    chunksize: int | None = None
    timeout: float | None = None
    pause: float | None = 0  # a float after construction
    method: str | multiprocessing.context.BaseContext | None = None
    return_exceptions: bool = False
    max_tasks_per_child: int | None = None
    initializer: Callable[..., Any] | None = None
    initargs: Iterable[Any] = ()  # a tuple after construction
    return_as: ReturnAs = "list"
    executor: Any = None
    item_timeout: float | None = None
    retries: int = 0
    retry_on: type[BaseException] | tuple[type[BaseException], ...] = Exception
    retry_delay: float = 0.0
    coroutine: bool = (
        False  # fn is a coroutine function (api.py tells): its items run on an event loop
    )
    backend: BackendName = "serial"  # derived, not given

    def __init__(self, **given: Any) -> None:
        unknown = given.keys() - _FIELDS
        if unknown:
            raise TypeError(
                f"Options() got unexpected keyword arguments: {', '.join(sorted(unknown))}"
            )
        for name in _FIELDS:
            self._set(name, given.get(name, getattr(Options, name)))
        self._normalise_loose_values()
        self._check_workers_and_flags()
        self._check_numbers()
        self._check_retries()
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
            if getattr(self, name) is not getattr(Options, name)
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
            import multiprocessing

            methods = multiprocessing.get_all_start_methods()
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
        if self.coroutine:
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
            if given:
                raise ValueError(
                    f"{', '.join(given)} cannot be used with executor=: the executor starts and "
                    "manages its own workers, so fastparallel can neither set them up, nor tell "
                    "when an item starts there, nor stop it; configure the workers there (put a "
                    "timeout inside fn), or leave executor=None"
                )
        elif self.threadpool and given and self.n_workers != 0:
            raise ValueError(
                f"{', '.join(given)} applies to worker processes, not to threadpool=True"
            )


_FIELDS = tuple(name for name in Options.__annotations__ if name != "backend")
