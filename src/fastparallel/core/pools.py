"""Warm pools: kept between calls, shared safely between threads, shut down at exit.

A call checks a pool out (:func:`checkout`, a context manager, with the backend's
:class:`~fastparallel.backends.base.PoolSpec`), uses it alone, and checks it back in. A later call with the same key (same kind of pool, start method,
initializer and ``max_tasks_per_child``) reuses it, so ``parallel()`` in a loop over
batches pays for worker start-up once. Concurrent calls from several threads each get
their own pool. A pool that may not serve again (its threads still run abandoned work,
its workers were forked for one call) is shut down instead of kept.

Nothing here runs at import: the exit and fork hooks are installed by the first call
that checks a pool out (or asks :func:`exiting`). :func:`shutdown` and interpreter exit
stop the idle pools, then what lies below them: the template process that forks worker
processes, and ``threadpool="auto"``'s memory of earlier choices.
"""

from __future__ import annotations

import atexit
import contextlib
import sys
import threading
from collections import OrderedDict
from collections.abc import Hashable

from fastparallel import logs
from fastparallel.backends.base import Backend, Pool, PoolSpec
from fastparallel.worker_state import at_fork_in_child

__all__ = ["MAX_IDLE_POOLS", "checkout", "exiting", "has_idle", "shutdown"]


# Idle pools kept at most, over all keys. A few cover the usual mix (threads, processes,
# one with an initializer) without holding many idle processes; the least recently used
# pool goes first.
MAX_IDLE_POOLS = 4


class PoolRecord:
    """One pool and what the registry knows of it; records compare by identity."""

    __slots__ = ("generation", "key", "pool")

    def __init__(self, pool: Pool, key: Hashable | None, generation: int):
        self.pool = pool
        self.key = key  # pools with key None serve one call and are never shared
        self.generation = generation  # shutdown() starts a new generation; older pools are not kept


class _Registry:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.idle: OrderedDict[Hashable, list[PoolRecord]] = OrderedDict()
        self.in_use: set[PoolRecord] = set()
        self.generation = 0


_registry = _Registry()
_hook_lock = threading.Lock()
_hooks_installed = False
_mp_hook_installed = False
_exiting = False


def exiting() -> bool:
    """True once the interpreter has begun to exit: no pool may be started or used."""
    _install_hooks()
    return _exiting


class checkout:  # lower case: it is used as a function, ``with checkout(spec) as backend``
    """A backend for one call: an idle pool kept under ``spec.key`` if there is one, else
    ``spec.create()``; kept for a later call afterwards if it may serve again.

    A class rather than ``@contextmanager``: the user's exceptions pass through it, and
    contextlib's generator wrapper assigns their ``__traceback__``, which an exception
    that refuses attributes (a frozen dataclass) turns into a ``FrozenInstanceError``.

    Example:
        >>> from fastparallel.backends.threads import ThreadPool
        >>> with checkout(PoolSpec(("example",), ThreadPool)) as pool:
        ...     pool.reusable
        True
    """

    __slots__ = ("_record", "_spec")

    def __init__(self, spec: PoolSpec) -> None:
        self._spec = spec
        self._record: PoolRecord | None = None

    def __enter__(self) -> Backend:
        spec = self._spec
        if spec.joins_children:
            _install_multiprocessing_hook()
        record = _take_idle(spec.key)
        if record is None:
            pool = spec.create()
            with _registry.lock:
                record = PoolRecord(pool, spec.key, _registry.generation)
                _registry.in_use.add(record)
        self._record = record
        return record.pool  # type: ignore[return-value]

    def __exit__(self, *exc_info: object) -> None:
        record = self._record
        self._record = None
        if record is not None:
            _check_in(record)


def has_idle(kind: str) -> bool:
    """Whether an idle pool of this kind ("threads", "processes": its key's first part)
    is kept, ready for the next call."""
    with _registry.lock:
        return any(isinstance(key, tuple) and key[:1] == (kind,) for key in _registry.idle)


def _take_idle(key: Hashable | None) -> PoolRecord | None:
    _install_hooks()
    if key is None:
        return None
    with _registry.lock:
        records = _registry.idle.get(key)
        if not records:
            return None
        record = records.pop()
        if not records:
            del _registry.idle[key]
        _registry.in_use.add(record)
        return record


def _check_in(record: PoolRecord) -> None:
    """Keep the pool for the next call, or shut it down if it may not serve again."""
    registry = _registry
    with registry.lock:
        registry.in_use.discard(record)
        keep = (
            record.key is not None
            and record.pool.reusable
            and record.generation == registry.generation
            and not _exiting
        )
        evicted = [] if keep else [record]
        if keep:
            registry.idle.setdefault(record.key, []).append(record)
            registry.idle.move_to_end(record.key)
            while sum(len(group) for group in registry.idle.values()) > MAX_IDLE_POOLS:
                oldest = next(iter(registry.idle))
                evicted.append(registry.idle[oldest].pop(0))
                if not registry.idle[oldest]:
                    del registry.idle[oldest]
    for old in evicted:
        old.pool.shutdown()


def shutdown() -> None:
    """Stop all warm worker pools now, and the template process that starts worker
    processes. Pools in use are stopped when their call ends.

    Later calls start new pools (and a new template) as needed, and
    ``threadpool="auto"`` measures again.

    Example:
        >>> import fastparallel
        >>> fastparallel.shutdown()
    """
    _stop_idle_pools()
    _stop_below(at_exit=False)


def _stop_below(at_exit: bool) -> None:
    """Once the pools have stopped: stop the template process and forget auto's choices
    (only if this process ever used them: nothing is imported for it)."""
    if "fastparallel.backends.processes.template.client" in sys.modules:
        from fastparallel.backends.processes.template.client import stop_template

        try:
            stop_template(at_exit)
        except Exception:  # pragma: no cover - best effort
            logs.debug("error while stopping the template process", exc_info=True)
    if "fastparallel.auto.choose" in sys.modules:
        from fastparallel.auto.choose import forget

        forget()


def _stop_idle_pools() -> None:
    with _registry.lock:
        _registry.generation += 1
        idle = [record for group in _registry.idle.values() for record in group]
        _registry.idle.clear()
    for record in idle:
        try:
            record.pool.shutdown()
        except Exception:  # pragma: no cover - best effort at exit
            logs.debug("error while shutting down a pool", exc_info=True)


# -- hooks: interpreter exit and fork ------------------------------------------------


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
        at_fork_in_child(_forget_after_fork)


def _nothing() -> None:
    pass


def _install_multiprocessing_hook() -> None:
    """Make sure worker processes are stopped before multiprocessing joins its children.

    At exit, multiprocessing joins every non-daemon child process (ours are not daemons,
    so that they may start nested pools). Whether its atexit hook runs before or after
    ours depends on import order; its finalizers with a priority always run first.
    """
    global _mp_hook_installed
    with _hook_lock:
        if _mp_hook_installed:
            return
        _mp_hook_installed = True
    import multiprocessing.util

    multiprocessing.util.Finalize(None, _at_exit, exitpriority=100)


def _at_exit() -> None:
    global _exiting
    if _exiting:
        return
    _exiting = True
    _stop_idle_pools()
    with _registry.lock:
        busy = [record.pool for record in _registry.in_use]
    for pool in busy:
        pool.kill_at_exit()
    _stop_below(at_exit=True)


def _forget_after_fork() -> None:
    """In a forked child the parent's pools are not ours: forget them, closing (our copies
    of) their descriptors without telling their workers anything. A child that lives on
    must not hold the write ends of the parent's workers' pipes: they would outlive the
    parent, even one killed by SIGKILL."""
    global _registry
    old = _registry
    _registry = _Registry()
    pools = [record.pool for group in old.idle.values() for record in group]
    pools.extend(record.pool for record in old.in_use)
    for pool in pools:
        forget = getattr(pool, "forget_in_child", None)
        if forget is not None:
            with contextlib.suppress(Exception):  # best effort in a child
                forget()
