"""The places where chunks run: serial, threads, processes, an external executor, an event loop.

Each backend module has a ``checkout(options)`` that returns a context manager yielding
a :class:`~.base.Backend` for one call: a new object (serial, executor) or a warm pool
taken from :mod:`fastparallel.pools` and given back afterwards (threads, processes, the
event loop thread that runs coroutine functions).
Choosing a backend is a lookup by :attr:`Options.backend
<fastparallel.options.Options.backend>`; modules are imported on first use, so that
``import fastparallel`` stays fast.
"""

from __future__ import annotations

import importlib

TYPE_CHECKING = False  # worker processes import this package: no typing at run time
if TYPE_CHECKING:
    from contextlib import AbstractContextManager

    from ..options import BackendName, Options
    from .base import Backend

__all__ = ["checkout"]

_MODULES: dict[BackendName, str] = {
    "serial": "serial",
    "threads": "threads",
    "processes": "processes",
    "executor": "executor",
    "coroutines": "coroutines",
}


def checkout(name: BackendName, options: Options) -> AbstractContextManager[Backend]:
    """The backend called ``name``, for one call with ``options``."""
    if name == "processes" and options.method is None:
        # The template process that starts workers boots (~20 ms) while this process
        # imports the pool's modules: start it first.
        from .template_client import start_early

        start_early()
    module = importlib.import_module(f".{_MODULES[name]}", __name__)
    backend: AbstractContextManager[Backend] = module.checkout(options)
    return backend
