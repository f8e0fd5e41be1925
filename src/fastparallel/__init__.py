"""fastparallel: map a function over items on threads or processes.

Example:
    >>> from fastparallel import parallel
    >>> parallel(abs, [-1, -2, 3], threadpool=True)
    [1, 2, 3]
"""

from ._version import __version__
from .api import parallel
from .cpus import num_cpus
from .errors import (
    FastParallelError,
    ParallelTimeoutError,
    RemoteError,
    RemoteTraceback,
    TaskExitError,
    WorkerDiedError,
)
from .pools import shutdown

__all__ = [
    "parallel",
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
