"""What to call for each item (:class:`Call`) and the loop that calls it over one chunk.

Every kind of worker (the serial runner, a thread, a worker process, an executor's
worker) runs :func:`run_chunk`.

It is the innermost hot path, so it stays small: one call per item, exceptions caught
and recorded by offset, optional early stop and cancellation.
"""

from __future__ import annotations

import sys
from collections import namedtuple
from functools import partial
from time import monotonic_ns, perf_counter
from types import CodeType

# Worker processes import this module: at run time the named tuples are plain
# collections.namedtuple classes, so that starting a worker does not import typing
# (about 10 ms). Type checkers read the declarations below.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from typing import Any, NamedTuple, Protocol

    class CurrentItem(Protocol):
        """Where a worker records the input index of the item it is running (at ``[0]``)
        and, with ``item_timeout``, when it started (at ``[1]``, ``time.monotonic_ns()``).

        In a worker process it is shared memory the caller reads after a crash, to pin
        the crash on one item, and to tell when a running item is overdue.
        """

        def __setitem__(self, index: int, value: int, /) -> None: ...

    class Call(NamedTuple):
        """What to call for each item: ``fn(*args, item, **kwargs)``."""

        fn: Callable[..., Any]
        args: tuple[Any, ...]
        kwargs: dict[str, Any]

    class ChunkRun(NamedTuple):
        """The outcome of running a chunk.

        ``values[i]`` is the result for item ``i`` of the chunk (None where it failed);
        ``errors`` lists ``(offset, exception)``. ``values`` may be shorter than the chunk
        when the run stopped early (first error with ``stop_on_error``, or cancellation).
        """

        values: list[Any]
        errors: list[tuple[int, BaseException]]
        seconds: float
else:
    Call = namedtuple("Call", ["fn", "args", "kwargs"], module=__name__)
    ChunkRun = namedtuple("ChunkRun", ["values", "errors", "seconds"], module=__name__)

_NEVER = (False,)  # ``cancelled`` for a run that nothing cancels

__all__ = [
    "Call",
    "ChunkRun",
    "CurrentItem",
    "Task",
    "is_coroutine_function",
    "run_chunk",
    "run_task",
]


class Task:
    """One call, ``fn(*args, **kwargs)``: an item of :class:`fastparallel.Executor`'s
    chunks, whose :class:`Call` is :func:`run_task` (so that one pickled call serves every
    task, and each task's function travels with it). Its repr is the call, for errors.

    Example:
        >>> Task(divmod, (7, 2), {})
        divmod(7, 2)
        >>> run_task(Task(divmod, (7, 2), {}))
        (3, 1)
    """

    __slots__ = ("args", "fn", "kwargs")

    def __init__(self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]):
        self.fn = fn
        self.args = args
        self.kwargs = kwargs

    def __reduce__(self) -> tuple[Any, ...]:
        return (Task, (self.fn, self.args, self.kwargs))

    def __repr__(self) -> str:
        name = getattr(self.fn, "__qualname__", None) or repr(self.fn)
        words = [repr(a) for a in self.args] + [f"{k}={v!r}" for k, v in self.kwargs.items()]
        return f"{name}({', '.join(words)})"


def run_task(task: Task) -> Any:
    """Call ``task``: what every chunk of :class:`fastparallel.Executor` maps over."""
    return task.fn(*task.args, **task.kwargs)


def is_coroutine_function(fn: Any) -> bool:
    """Whether calling ``fn`` returns a coroutine to await.

    True for an ``async def`` function or method, a ``functools.partial`` of one, and an
    object whose ``__call__`` is one.

    Example:
        >>> async def fetch(url): ...
        >>> is_coroutine_function(fetch), is_coroutine_function(partial(fetch)), is_coroutine_function(len)
        (True, True, False)
    """
    while isinstance(fn, partial):
        fn = fn.func
    if _async_def(fn):
        return True
    # An instance with ``async def __call__``; not a class, whose call builds an instance.
    return callable(fn) and not isinstance(fn, type) and _async_def(fn.__call__)


_CO_COROUTINE = 0x80  # inspect.CO_COROUTINE: the code of an ``async def``


def _async_def(fn: Any) -> bool:
    """``inspect.iscoroutinefunction(fn)``, without importing :mod:`inspect` (~7 ms, on
    every script's first call) when nothing has: then no function can have been marked
    with ``inspect.markcoroutinefunction``, and the code's flags tell."""
    inspect = sys.modules.get("inspect")
    if inspect is not None:
        return bool(inspect.iscoroutinefunction(fn))
    fn = getattr(fn, "__func__", fn)  # a bound method
    while isinstance(fn, partial):
        fn = fn.func
    code = getattr(fn, "__code__", None)
    return type(code) is CodeType and bool(code.co_flags & _CO_COROUTINE)


def run_chunk(
    call: Call,
    items: list[Any],
    start: int,
    stop_on_error: bool,
    *,
    current_item: CurrentItem | None = None,
    cancelled: Sequence[bool] | None = None,
    propagate_interrupt: bool = False,
    timed: bool = False,
    into: tuple[list[Any], list[tuple[int, BaseException]]] | None = None,
) -> ChunkRun:
    """Run ``call`` on each of ``items`` (input indices ``start``, ``start + 1``, ...).

    Args:
        current_item: if given, ``current_item[0]`` is set to the input index of the item
            about to run, so that the caller can tell which item a crashed worker was running.
        cancelled: if given, the run ends before the next item once ``cancelled[0]`` is
            true (a one-element list: reading it costs less than calling a method).
        propagate_interrupt: let ``KeyboardInterrupt`` through (serial runs in the main
            thread, where it is a real Ctrl-C) instead of recording it.
        timed: (with ``current_item``, for ``item_timeout``) also set ``current_item[1]``
            to the item's start time, and ``current_item[0]`` to -1 once the chunk is over;
            ``cancelled`` is checked too.
        into: lists to fill with the values and the errors as the items finish (they are
            returned too), so that the finished items of a chunk whose thread was
            abandoned at an ``item_timeout`` keep their results.
    """
    fn, args, kwargs = call
    one = partial(fn, *args, **kwargs) if args or kwargs else fn
    values, errors = ([], []) if into is None else into
    append = values.append
    remaining = iter(items)  # the loops below resume from here after an exception
    stop = _NEVER if cancelled is None else cancelled
    began = perf_counter()
    while True:
        try:
            # Plain loops rather than one with per-item conditions: this is the
            # innermost hot path, and each check costs as much as a trivial fn.
            if timed and current_item is not None:
                index = start + len(values)
                for item in remaining:
                    if stop[0]:
                        break
                    # The time first, then the index: a reader that sees the same index
                    # before and after reading the time never pairs it with an older time.
                    current_item[1] = monotonic_ns()
                    current_item[0] = index
                    index += 1
                    append(one(item))
            elif current_item is not None:
                index = start + len(values)
                for item in remaining:
                    if stop[0]:
                        break
                    current_item[0] = index
                    index += 1
                    append(one(item))
            elif cancelled is not None:
                for item in remaining:
                    if cancelled[0]:
                        break
                    append(one(item))
            else:
                for item in remaining:
                    append(one(item))
            break
        except Exception as exc:
            errors.append((len(values), exc))
            append(None)
        except BaseException as exc:
            if propagate_interrupt and isinstance(exc, KeyboardInterrupt):
                raise
            errors.append((len(values), exc))
            append(None)
        if stop_on_error:
            break
    if timed and current_item is not None:
        current_item[0] = -1  # over: sending the results back is not part of an item's time
    return ChunkRun(values, errors, perf_counter() - began)
