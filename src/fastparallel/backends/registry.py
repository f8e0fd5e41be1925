"""Which backend serves a call: the :class:`~fastparallel.backends.base.PoolSpec` for a name.

Each backend module has a ``pool_spec(options)`` that says how to get a backend for one
call: a new object each time (serial, an external executor) or a warm pool kept by
:mod:`fastparallel.core.pools` for later calls with the same key (threads, processes,
the event loop thread that runs coroutine functions). The dispatcher asks here by
:attr:`Options.backend <fastparallel.options.Options.backend>`.

The process pool, ``parallel()``'s default, is imported with this module (and so with
``from fastparallel import parallel``): its ~25 modules took a first call ~4 ms to import,
a third of a first call over 20k tiny items. The other backends are imported on first use.
"""

from __future__ import annotations

import sys

from fastparallel.backends.processes import pool

TYPE_CHECKING = False
if TYPE_CHECKING:
    from fastparallel.backends.base import PoolSpec
    from fastparallel.options import BackendName, Options

__all__ = ["default_workers", "pool_spec"]


def pool_spec(name: BackendName, options: Options) -> PoolSpec:
    """How to get the backend called ``name`` for one call with ``options``."""
    if name == "serial":
        from fastparallel.backends import serial

        return serial.pool_spec(options)
    if name == "threads":
        from fastparallel.backends import threads

        return threads.pool_spec(options)
    if name == "coroutines":
        from fastparallel.backends import coroutines

        return coroutines.pool_spec(options)
    if name == "external":
        from fastparallel.backends import external

        return external.pool_spec(options)
    if options.method == "template" or (options.method is None and sys.platform == "darwin"):
        # The template process that starts workers boots (~20 ms) while this process
        # prepares the pool and pickles the call: start it first. (On Linux the default
        # forks the caller when that is safe: the template starts only if it is not.)
        from fastparallel.backends.processes.template.client import start_early

        start_early()
    return pool.pool_spec(options)


def default_workers(options: Options) -> int:
    """The workers of a call with ``n_workers=None``: what the external executor can run
    at once, else what :class:`~fastparallel.options.Options` resolved."""
    if options.n_workers is not None:
        return options.n_workers
    from fastparallel.backends.external import executor_workers

    return executor_workers(options.executor)
