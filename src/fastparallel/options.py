"""The options of one :func:`~fastparallel.parallel` call, checked once, before anything starts.

:class:`Options` holds every keyword of ``parallel()`` except ``fn``, ``items``, ``args``
and ``kwargs``. Building one validates each value, rejects combinations that the chosen
backend could not honour (rather than ignoring them silently), and resolves the defaults
(``n_workers=None``). Everything below the entry point takes an ``Options``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from .cpus import default_workers
from .progress import ProgressCallback

if TYPE_CHECKING:
    import multiprocessing.context

__all__ = ["Options", "BackendName", "ReturnAs"]

BackendName = Literal["serial", "threads", "processes", "executor"]
ReturnAs = Literal["list", "generator", "generator_unordered"]
RETURN_AS = ("list", "generator", "generator_unordered")
# Options that only mean something for local worker processes.
_PROCESS_ONLY = ("method", "max_tasks_per_child")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isnan(value)


def _is_context(method: Any) -> bool:
    """A multiprocessing context, recognised without importing multiprocessing."""
    return all(hasattr(method, name) for name in ("Process", "Pipe", "get_start_method"))


@dataclass(frozen=True)
class Options:
    """The validated keywords of one ``parallel()`` call (see its docstring for each).

    ``n_workers`` is resolved: after construction it is the number of workers to use
    (0 runs serially), never None. ``backend`` names where chunks run.

    Example:
        >>> Options(n_workers=0).backend
        'serial'
        >>> Options(threadpool=True, n_workers=3).n_workers
        3
    """

    n_workers: int | None = None
    threadpool: bool = False
    progress: bool | ProgressCallback | None = None
    total: int | None = None
    chunksize: int | None = None
    timeout: float | None = None
    pause: float = 0
    method: str | multiprocessing.context.BaseContext | None = None
    return_exceptions: bool = False
    max_tasks_per_child: int | None = None
    initializer: Callable[..., Any] | None = None
    initargs: Iterable[Any] = ()  # a tuple after construction
    return_as: ReturnAs = "list"
    executor: Any = None
    backend: BackendName = field(init=False, default="serial")

    def __post_init__(self) -> None:
        self._check_workers_and_flags()
        self._check_numbers()
        self._check_method_and_initializer()
        self._check_backend_fit()
        backend: BackendName
        if self.executor is not None:
            backend = "executor"
        elif self.n_workers == 0:
            backend = "serial"
        else:
            backend = "threads" if self.threadpool else "processes"
        self._set("backend", backend)
        self._set("initargs", tuple(self.initargs))
        if self.n_workers is None:
            self._set("n_workers", self._default_workers())

    def _set(self, name: str, value: Any) -> None:
        object.__setattr__(self, name, value)  # a frozen dataclass, normalised once here

    def _default_workers(self) -> int:
        if self.executor is not None:
            from .backends.executor import executor_workers

            return executor_workers(self.executor)
        return default_workers(self.threadpool)

    @property
    def stop_on_error(self) -> bool:
        """Whether the first error ends the call (else it goes in its item's slot)."""
        return not self.return_exceptions

    def _check_workers_and_flags(self) -> None:
        n_workers = self.n_workers
        if n_workers is not None:
            if not _is_int(n_workers):
                raise TypeError(f"n_workers must be an int or None, got {type(n_workers).__name__}")
            if n_workers < 0:
                raise ValueError(f"n_workers must be >= 0 (0 runs serially), got {n_workers}")
        if not isinstance(self.threadpool, bool):
            raise TypeError(f"threadpool must be True or False, got {self.threadpool!r:.60}")
        progress = self.progress
        if not (progress is None or isinstance(progress, bool) or callable(progress)):
            raise TypeError(f"progress must be None, a bool or a callable(done, total), got {progress!r:.60}")
        if not isinstance(self.return_exceptions, bool):
            raise TypeError(f"return_exceptions must be True or False, got {self.return_exceptions!r:.60}")
        if self.return_as not in RETURN_AS:
            raise ValueError(f"return_as must be one of {RETURN_AS}, got {self.return_as!r:.60}")

    def _check_numbers(self) -> None:
        total, chunksize, timeout, pause = self.total, self.chunksize, self.timeout, self.pause
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
        max_tasks = self.max_tasks_per_child
        if max_tasks is not None and (not _is_int(max_tasks) or max_tasks < 1):
            raise ValueError(f"max_tasks_per_child must be an int >= 1 or None, got {max_tasks!r:.60}")

    def _check_method_and_initializer(self) -> None:
        method = self.method
        if method is not None and not _is_context(method):
            if not isinstance(method, str):
                raise TypeError(f"method must be a start method name, a multiprocessing context or None, "
                                f"got {method!r:.60}")
            import multiprocessing

            methods = multiprocessing.get_all_start_methods()
            if method not in methods:
                raise ValueError(f"unknown start method {method!r}; use one of {methods}")
        if self.initializer is not None and not callable(self.initializer):
            raise TypeError(f"initializer must be callable or None, got {self.initializer!r:.60}")
        try:
            iter(self.initargs)
        except TypeError:
            raise TypeError(f"initargs must be a tuple of arguments, got {self.initargs!r:.60}") from None

    def _check_backend_fit(self) -> None:
        """Refuse options that the chosen backend would otherwise silently ignore."""
        given = [name for name in _PROCESS_ONLY if getattr(self, name) is not None]
        if self.executor is not None:
            if not hasattr(self.executor, "submit"):
                raise TypeError("executor must be a concurrent.futures.Executor or a dask Client, "
                                f"got {self.executor!r:.60}")
            if self.initializer is not None:
                given.append("initializer")
            if given:
                raise ValueError(f"{', '.join(given)} cannot be used with executor=: the executor starts and "
                                 "manages its own workers; configure them there, or leave executor=None")
        elif self.threadpool and given and self.n_workers != 0:
            raise ValueError(f"{', '.join(given)} applies to worker processes, not to threadpool=True")
