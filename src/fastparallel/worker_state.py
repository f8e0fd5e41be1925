"""Per-worker state: an object built once in each worker and reused for every item there.

``per_worker(factory, *args, **kwargs)`` returns a small callable, ``get``. Each
``get`` has a token (128 random bits, like a uuid4) made when ``per_worker()`` is called; the objects it builds
live in a registry per thread, keyed by that token. ``get`` pickles as a reference to
its class plus ``(factory, args, kwargs, token)``, so a worker process that receives it
(inside ``fn``, as an argument, or as a global that ``fn`` uses) builds the object
itself on the first ``get()`` and finds it again in later calls on a warm pool. Nothing
is built while pickling: a process run never builds the object in the caller.

The module is named ``worker_state`` rather than ``per_worker``, so that importing it
(as unpickling a ``get`` does) never hides the function ``fastparallel.per_worker``.
"""

from __future__ import annotations

import os
import threading

# A worker process imports this module when it unpickles a get(): no typing or uuid at
# run time (they would add ~10 ms to that worker's first item).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, TypeVar

    T = TypeVar("T")

__all__ = ["FORK_SAFE", "PerWorker", "at_fork_in_child", "mark_fork_safe", "per_worker"]

# One registry per thread: objects per thread need no lock, and no two first calls of
# the same get() can race. Replaced in a forked child (see _forget_objects).
_local = threading.local()
_forget_in_child: list[Callable[[], None]] = []  # see at_fork_in_child


class PerWorker:
    """``get``: returns the object ``factory(*args, **kwargs)`` built in this worker.

    Made by :func:`per_worker`; see there.
    """

    __slots__ = ("_args", "_factory", "_kwargs", "_token")

    def __init__(
        self, factory: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any], token: str
    ):
        self._factory = factory
        self._args = args
        self._kwargs = kwargs
        self._token = token

    def __call__(self) -> Any:
        try:
            return _local.objects[self._token]
        except (AttributeError, KeyError):
            return self._build()

    def _build(self) -> Any:
        at_fork_in_child(_forget_objects)  # a forked child builds its own objects
        objects: dict[str, Any] | None = getattr(_local, "objects", None)
        if objects is None:
            objects = _local.objects = {}
        built = self._factory(*self._args, **self._kwargs)
        objects[self._token] = built
        return built

    def __reduce__(self) -> tuple[Any, ...]:
        # By reference to this class, with the factory and the token: the object itself
        # never travels, and is built where get() is first called.
        return (PerWorker, (self._factory, self._args, self._kwargs, self._token))

    def __repr__(self) -> str:
        name = getattr(self._factory, "__qualname__", None) or repr(self._factory)
        arguments = [repr(a) for a in self._args] + [f"{k}={v!r}" for k, v in self._kwargs.items()]
        call = f"{name}({', '.join(arguments)})"
        if len(call) > 80:
            call = call[:77] + "..."
        return f"per_worker({call}) [token {self._token[:8]}]"


def per_worker(factory: Callable[..., T], /, *args: Any, **kwargs: Any) -> Callable[[], T]:
    """A callable ``get``: ``get()`` returns ``factory(*args, **kwargs)``, built once per worker.

    The object is built the first time ``get()`` is called in a worker process (one
    per thread of a thread pool; one per calling thread when ``n_workers=0``; one per
    event-loop thread for coroutine functions), and every later ``get()`` there
    returns the same object, including in later ``parallel()`` calls on a warm pool.
    Use it for what is costly to build and reusable: a model, a tokenizer, a database
    connection, an HTTP session.

    ``get`` can be passed to ``fn`` as an argument or used as a global inside ``fn``; it
    travels with ``fn`` to worker processes. ``factory`` may be a lambda, or a function
    or class defined in a notebook or a script. Nothing is built in the calling
    process for a process run, nor while pickling. Calling ``get()`` costs a dictionary
    lookup (about a tenth of a microsecond), so call it once per item.

    Objects are per thread: code that runs in several threads of a worker (a thread
    pool, threads of your own) gets one object per thread. They live as long as the
    worker (or thread) does.

    Example:
        >>> from fastparallel import parallel, per_worker
        >>> model = per_worker(dict, weights=[1, 2, 3])   # built once per worker
        >>> def predict(x):
        ...     return sum(w * x for w in model()["weights"])
        >>> parallel(predict, [1, 2, 3], threadpool=True, n_workers=2)
        [6, 12, 18]
    """
    if not callable(factory):
        raise TypeError(
            f"per_worker() needs a callable that builds the object, got {factory!r:.60}"
        )
    return PerWorker(factory, args, kwargs, os.urandom(16).hex())


def at_fork_in_child(forget: Callable[[], None]) -> None:
    """Call ``forget()`` in each child process forked from this one, right after the fork.

    The one at-fork registry of fastparallel: the warm pools, the template process and
    the per-worker objects of a parent are not the child's, and each module that holds
    some registers how to forget them (once; later registrations of the same function
    are ignored). Nothing is registered with the interpreter until the first call.
    """
    if forget in _forget_in_child:
        return
    if not _forget_in_child and hasattr(os, "register_at_fork"):
        os.register_at_fork(after_in_child=_after_fork_in_child)
    _forget_in_child.append(forget)


FORK_SAFE = "fastparallel_fork_safe"  # the attribute of a thread that mark_fork_safe() sets


def mark_fork_safe(thread: threading.Thread, is_safe: Callable[[], bool]) -> None:
    """Mark one of fastparallel's threads: forking this process is safe while ``is_safe()``
    is true (an idle pool thread holds no lock that a forked child could need).

    Example:
        >>> thread = threading.Thread(target=print)
        >>> mark_fork_safe(thread, lambda: True)
        >>> getattr(thread, FORK_SAFE)()
        True
    """
    setattr(thread, FORK_SAFE, is_safe)


def _after_fork_in_child() -> None:
    for forget in _forget_in_child:
        forget()


def _forget_objects() -> None:
    global _local
    _local = threading.local()
