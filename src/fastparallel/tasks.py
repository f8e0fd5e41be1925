"""Calling ``fn`` over the items of one chunk: the loop every kind of worker runs.

It is the innermost hot path, so it stays small: one call per item, exceptions caught
and recorded by offset, optional early stop and cancellation.
"""

from __future__ import annotations

from collections.abc import Callable, MutableSequence
from time import perf_counter
from typing import Any, NamedTuple

__all__ = ["Call", "ChunkRun", "run_chunk"]


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


def run_chunk(
    call: Call,
    items: list[Any],
    start: int,
    stop_on_error: bool,
    *,
    mark: MutableSequence[int] | None = None,
    is_cancelled: Callable[[], bool] | None = None,
    propagate_interrupt: bool = False,
) -> ChunkRun:
    """Run ``call`` on each of ``items`` (input indices ``start``, ``start + 1``, ...).

    Args:
        mark: if given, ``mark[0]`` is set to the input index of the item about to run,
            so that the caller can tell which item a crashed worker was running.
        is_cancelled: checked before each item; a true result ends the run.
        propagate_interrupt: let ``KeyboardInterrupt`` through (serial runs in the main
            thread, where it is a real Ctrl-C) instead of recording it.
    """
    fn, args, kwargs = call
    values: list[Any] = []
    errors: list[tuple[int, BaseException]] = []
    append = values.append
    began = perf_counter()
    for offset, item in enumerate(items):
        if is_cancelled is not None and is_cancelled():
            break
        if mark is not None:
            mark[0] = start + offset
        try:
            append(fn(*args, item, **kwargs))
        except Exception as exc:
            append(None)
            errors.append((offset, exc))
            if stop_on_error:
                break
        except BaseException as exc:
            if propagate_interrupt and isinstance(exc, KeyboardInterrupt):
                raise
            append(None)
            errors.append((offset, exc))
            if stop_on_error:
                break
    return ChunkRun(values, errors, perf_counter() - began)
