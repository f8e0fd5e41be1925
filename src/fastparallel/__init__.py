"""fastparallel: map a function over items on threads, processes or an event loop.

Example:
    >>> from fastparallel import parallel
    >>> parallel(abs, [-1, -2, 3], threadpool=True)
    [1, 2, 3]
"""

# The public names are imported on first use: a worker process imports this package
# for its own modules only, and should not pay for the dispatcher and the options.
import importlib

from ._version import __version__

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .advice import Advice, advise
    from .aio import parallel_async, parallel_async_dict, parallel_async_gen
    from .api import parallel
    from .cpus import num_cpus
    from .errors import (
        FastParallelError,
        ItemTimeoutError,
        ParallelTimeoutError,
        RemoteError,
        RemoteTraceback,
        TaskExitError,
        WorkerDiedError,
    )
    from .pools import shutdown
    from .worker_state import per_worker

_WHERE = {
    "parallel": "api",
    "advise": "advice",
    "Advice": "advice",
    "parallel_async": "aio",
    "parallel_async_gen": "aio",
    "parallel_async_dict": "aio",
    "num_cpus": "cpus",
    "shutdown": "pools",
    "per_worker": "worker_state",
    "FastParallelError": "errors",
    "WorkerDiedError": "errors",  # defined on first use: see errors.worker_died_error
    "TaskExitError": "errors",
    "ParallelTimeoutError": "errors",
    "ItemTimeoutError": "errors",
    "RemoteError": "errors",
    "RemoteTraceback": "errors",
}


def __getattr__(name: str) -> object:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_WHERE])


__all__ = [
    "parallel",
    "advise",
    "Advice",
    "parallel_async",
    "parallel_async_gen",
    "parallel_async_dict",
    "num_cpus",
    "shutdown",
    "per_worker",
    "FastParallelError",
    "WorkerDiedError",
    "TaskExitError",
    "ParallelTimeoutError",
    "ItemTimeoutError",
    "RemoteError",
    "RemoteTraceback",
    "__version__",
]
