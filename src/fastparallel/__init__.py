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
if TYPE_CHECKING:  # for type checkers and IDEs (``as``: re-exported); the same as _WHERE
    from fastparallel.aio import parallel_async as parallel_async
    from fastparallel.aio import parallel_async_dict as parallel_async_dict
    from fastparallel.aio import parallel_async_gen as parallel_async_gen
    from fastparallel.api import advise as advise
    from fastparallel.api import parallel as parallel
    from fastparallel.auto.advice import Advice as Advice
    from fastparallel.auto.model import Measurements as Measurements
    from fastparallel.auto.model import PickleCost as PickleCost
    from fastparallel.auto.model import StartCaveat as StartCaveat
    from fastparallel.auto.model import StartHow as StartHow
    from fastparallel.auto.model import StartSource as StartSource
    from fastparallel.core.pools import shutdown as shutdown
    from fastparallel.cpus import num_cpus as num_cpus
    from fastparallel.errors import FastParallelError as FastParallelError
    from fastparallel.errors import ItemTimeoutError as ItemTimeoutError
    from fastparallel.errors import ParallelTimeoutError as ParallelTimeoutError
    from fastparallel.errors import RemoteError as RemoteError
    from fastparallel.errors import TaskExitError as TaskExitError
    from fastparallel.errors import WorkerDiedError as WorkerDiedError
    from fastparallel.executor import Executor as Executor
    from fastparallel.options import ProgressCallback as ProgressCallback
    from fastparallel.options import ReturnAs as ReturnAs
    from fastparallel.options import Threadpool as Threadpool
    from fastparallel.worker_state import per_worker as per_worker
del TYPE_CHECKING  # not a public name

# The public names, each with the module that defines it: __all__, dir() and the imports on
# first use all come from here.
_WHERE = {
    "parallel": "fastparallel.api",
    "advise": "fastparallel.api",
    "Executor": "fastparallel.executor",
    "Advice": "fastparallel.auto.advice",
    "Measurements": "fastparallel.auto.model",  # Advice.measured
    "PickleCost": "fastparallel.auto.model",  # Measurements.item and .result
    "StartSource": "fastparallel.auto.model",  # Measurements.start_source
    "StartHow": "fastparallel.auto.model",  # StartSource.how
    "StartCaveat": "fastparallel.auto.model",  # StartSource.caveat
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
    # The types to annotate with: return_as=, threadpool=, progress= as a function.
    "ReturnAs": "fastparallel.options",
    "Threadpool": "fastparallel.options",
    "ProgressCallback": "fastparallel.options",
}

__all__ = ["__version__", *_WHERE]  # noqa: PLE0604 (the keys of _WHERE are strings)


def __getattr__(name: str) -> object:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(_import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*__all__, "__doc__", "__file__", "__name__", "__path__"})
