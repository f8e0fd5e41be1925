"""Warm pools: kept between calls, shared safely between threads, shut down at exit.

A call checks a pool out, uses it alone, and checks it back in. A later compatible call
(same kind, start method, initializer and ``max_tasks_per_child``) reuses it, so
``parallel()`` in a loop over batches pays for worker start-up once. Concurrent calls
from several threads each get their own pool. Pools whose workers were killed are
repaired on their next use; thread pools that still run abandoned work are dropped.

Nothing here runs at import: the exit hook and the fork hook are installed when the
first pool is created.
"""

from __future__ import annotations

import atexit
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import TYPE_CHECKING, Any

from .thread_pool import ThreadPool

if TYPE_CHECKING:
    from .process_pool import ProcessPool

__all__ = ["shutdown", "acquire_processes", "acquire_threads", "release", "exiting", "resolve_context"]

MAX_IDLE_POOLS = 4

_lock = threading.Lock()
_hook_lock = threading.Lock()
_idle: OrderedDict[Hashable, list[Any]] = OrderedDict()
_in_use: dict[int, Any] = {}
_generation = 0
_pool_generation: dict[int, int] = {}
_keys: dict[int, Hashable] = {}
_hooks_installed = False
_mp_hook_installed = False
_exiting = False


def exiting() -> bool:
    """True once the interpreter has begun to exit: no pool may be started or used."""
    _install_hooks()
    return _exiting


def resolve_context(method: Any) -> tuple[str, Any]:
    """The start method's name and multiprocessing context for ``method=``.

    The default is ``forkserver`` where the platform has it, else ``spawn``: both are
    safe when the caller runs threads, and the choice is the same on every Python.
    """
    import multiprocessing

    if method is None:
        method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
    if isinstance(method, str):
        return method, multiprocessing.get_context(method)
    return method.get_start_method(), method


def _install_hooks() -> None:
    global _hooks_installed, _exiting
    if _hooks_installed:
        return
    with _hook_lock:
        if _hooks_installed:
            return
        _hooks_installed = True
        # An atexit hook registered while the interpreter already exits (a first call
        # from an atexit handler) would never run; the threading module tells when that is.
        register_threading_atexit = getattr(threading, "_register_atexit", None)
        if register_threading_atexit is not None:
            try:
                register_threading_atexit(_nothing)
            except RuntimeError:
                _exiting = True
                return
        atexit.register(_at_exit)
        if hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=_forget_after_fork)


def _nothing() -> None:
    pass


def _install_multiprocessing_hook() -> None:
    """Make sure worker processes are stopped before multiprocessing joins its children.

    At exit, multiprocessing joins every non-daemon child process (ours are not daemons,
    so that they may start nested pools). Whether its atexit hook runs before or after
    ours depends on import order; its finalizers with a priority always run first.
    """
    global _mp_hook_installed
    if _mp_hook_installed:
        return
    _mp_hook_installed = True
    import multiprocessing.util

    multiprocessing.util.Finalize(None, _at_exit, exitpriority=100)


def _at_exit() -> None:
    global _exiting
    if not _exiting:
        _exiting = True
        shutdown()
        with _lock:
            busy = list(_in_use.values())
        for pool in busy:
            if hasattr(pool, "kill_at_exit"):
                pool.kill_at_exit()


def _forget_after_fork() -> None:
    """In a forked child the parent's pools are not ours: forget them without touching them."""
    global _lock
    _lock = threading.Lock()
    _idle.clear()
    _in_use.clear()
    _pool_generation.clear()
    _keys.clear()


def _checkout(key: Hashable, create: Callable[[], Any]) -> Any:
    _install_hooks()
    with _lock:
        pools = _idle.get(key)
        if pools:
            pool = pools.pop()
            if not pools:
                del _idle[key]
            _in_use[id(pool)] = pool
            return pool
    pool = create()
    with _lock:
        _pool_generation[id(pool)] = _generation
        _keys[id(pool)] = key
        _in_use[id(pool)] = pool
    return pool


def acquire_processes(method: Any, init_blob: bytes | None, max_tasks_per_child: int | None) -> ProcessPool:
    """A process pool for this call: a warm one if a compatible one is idle."""
    from .process_pool import ProcessPool

    with _lock:
        _install_multiprocessing_hook()
    name, ctx = resolve_context(method)
    key: Hashable = ("processes", name if isinstance(method, (str, type(None))) else id(ctx),
                     init_blob, max_tasks_per_child)
    return _checkout(key, lambda: ProcessPool(ctx, init_blob, max_tasks_per_child))  # type: ignore[no-any-return]


def acquire_threads(initializer: Callable[..., Any] | None, initargs: tuple[Any, ...]) -> ThreadPool:
    """A thread pool for this call. Pools with an initializer are never shared."""
    if initializer is not None:
        _install_hooks()
        pool = ThreadPool(initializer, initargs)
        with _lock:
            _pool_generation[id(pool)] = _generation
            _keys[id(pool)] = None
            _in_use[id(pool)] = pool
        return pool
    return _checkout(("threads",), ThreadPool)  # type: ignore[no-any-return]


def release(pool: Any) -> None:
    """Check a pool back in after a call, or shut it down if it may not serve again."""
    evicted: list[Any] = []
    with _lock:
        _in_use.pop(id(pool), None)
        generation = _pool_generation.get(id(pool), -1)
        key = _keys.get(id(pool))
        keep = (
            pool.reusable
            and key is not None
            and generation == _generation
            and not _exiting
            and not getattr(pool, "forks", False)  # fork pools serve one call
        )
        if keep:
            _idle.setdefault(key, []).append(pool)
            _idle.move_to_end(key)
            while sum(len(p) for p in _idle.values()) > MAX_IDLE_POOLS:
                oldest = next(iter(_idle))
                evicted.append(_idle[oldest].pop(0))
                if not _idle[oldest]:
                    del _idle[oldest]
        else:
            evicted.append(pool)
        for p in evicted:
            _pool_generation.pop(id(p), None)
            _keys.pop(id(p), None)
    for p in evicted:
        p.shutdown()


def shutdown() -> None:
    """Stop all warm worker pools now. Pools in use are stopped when their call ends.

    Later calls start new pools as needed.

    Example:
        >>> import fastparallel
        >>> fastparallel.shutdown()
    """
    global _generation
    with _lock:
        _generation += 1
        pools = [p for group in _idle.values() for p in group]
        _idle.clear()
        for p in pools:
            _pool_generation.pop(id(p), None)
            _keys.pop(id(p), None)
    for pool in pools:
        try:
            pool.shutdown()
        except Exception:  # pragma: no cover - best effort at exit
            import logging

            logging.getLogger("fastparallel").debug("error while shutting down a pool", exc_info=True)
