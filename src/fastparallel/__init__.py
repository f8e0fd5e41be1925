"""fastparallel: map a function over items on threads, processes or an event loop.

Example:
    >>> from fastparallel import parallel
    >>> parallel(abs, [-1, -2, 3], threadpool=True)
    [1, 2, 3]
"""

# The public names are imported on first use: a worker process imports this package
# for its own modules only, and should not pay for the dispatcher and the options.
from importlib import import_module as _import_module

__version__ = "0.1.0"

TYPE_CHECKING = False
if TYPE_CHECKING:
    from fastparallel.aio import parallel_async, parallel_async_dict, parallel_async_gen
    from fastparallel.api import advise, parallel
    from fastparallel.auto.advice import Advice
    from fastparallel.core.pools import shutdown
    from fastparallel.cpus import num_cpus
    from fastparallel.errors import (
        FastParallelError,
        ItemTimeoutError,
        ParallelTimeoutError,
        RemoteError,
        TaskExitError,
        WorkerDiedError,
    )
    from fastparallel.worker_state import per_worker

# Where each public name is defined.
_WHERE = {
    "parallel": "fastparallel.api",
    "advise": "fastparallel.api",
    "Advice": "fastparallel.auto.advice",
    "parallel_async": "fastparallel.aio",
    "parallel_async_gen": "fastparallel.aio",
    "parallel_async_dict": "fastparallel.aio",
    "num_cpus": "fastparallel.cpus",
    "shutdown": "fastparallel.core.pools",
    "per_worker": "fastparallel.worker_state",
    "FastParallelError": "fastparallel.errors",
    "WorkerDiedError": "fastparallel.errors",  # defined on first use: see errors.worker_died_error
    "TaskExitError": "fastparallel.errors",
    "ParallelTimeoutError": "fastparallel.errors",
    "ItemTimeoutError": "fastparallel.errors",
    "RemoteError": "fastparallel.errors",
}

__all__ = [
    "Advice",
    "FastParallelError",
    "ItemTimeoutError",
    "ParallelTimeoutError",
    "RemoteError",
    "TaskExitError",
    "WorkerDiedError",
    "__version__",
    "advise",
    "num_cpus",
    "parallel",
    "parallel_async",
    "parallel_async_dict",
    "parallel_async_gen",
    "per_worker",
    "shutdown",
]


def __getattr__(name: str) -> object:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(_import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*__all__, "__doc__", "__file__", "__name__", "__path__"})
