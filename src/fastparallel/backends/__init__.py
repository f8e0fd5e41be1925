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
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING

from .base import Backend

if TYPE_CHECKING:
    from ..options import BackendName, Options

__all__ = ["Backend", "checkout"]

_MODULES: dict[BackendName, str] = {
    "serial": "serial",
    "threads": "threads",
    "processes": "processes",
    "executor": "executor",
    "coroutines": "coroutines",
}


def checkout(name: BackendName, options: Options) -> AbstractContextManager[Backend]:
    """The backend called ``name``, for one call with ``options``."""
    module = importlib.import_module(f".{_MODULES[name]}", __name__)
    backend: AbstractContextManager[Backend] = module.checkout(options)
    return backend
