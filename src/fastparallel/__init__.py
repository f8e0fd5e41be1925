"""fastparallel: map a function over items on threads, processes or an event loop.

Example:
    >>> from fastparallel import parallel
    >>> parallel(abs, [-1, -2, 3], threadpool=True)
    [1, 2, 3]
"""

from typing import TYPE_CHECKING

from ._version import __version__
from .aio import parallel_async, parallel_async_dict, parallel_async_gen
from .api import parallel
from .cpus import num_cpus
from .errors import (
    FastParallelError,
    ParallelTimeoutError,
    RemoteError,
    RemoteTraceback,
    TaskExitError,
    worker_died_error,
)
from .pools import shutdown


def __getattr__(name: str) -> object:
    if name == "WorkerDiedError":  # defined on first use: see errors.worker_died_error
        return worker_died_error()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


if TYPE_CHECKING:
    from .errors import WorkerDiedError

__all__ = [
    "parallel",
    "parallel_async",
    "parallel_async_gen",
    "parallel_async_dict",
    "num_cpus",
    "shutdown",
    "FastParallelError",
    "WorkerDiedError",
    "TaskExitError",
    "ParallelTimeoutError",
    "RemoteError",
    "RemoteTraceback",
    "__version__",
]
