"""``parallel_async`` and friends: fastcore's asyncio maps, to await on your own event loop.

They have fastcore's names, signatures and call order, ``f(item, *args, **kwargs)``
(the item *first*, unlike :func:`~fastparallel.parallel`), so code written for
``fastcore.parallel.parallel_async`` works with the import swapped. A coroutine
function is awaited; a plain function runs in a thread (``asyncio.to_thread``).

They run on the caller's running loop, with no helper thread: at most ``n_workers``
items at once, item ``i`` never started before ``i * pause`` seconds from the start,
``timeout`` seconds per item (an item past it fails with ``asyncio.TimeoutError``,
the built-in ``TimeoutError`` from Python 3.11 on). Unlike
fastcore, the input is read as items start rather than all at once, and an error names
its item in a note.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Coroutine, Iterable
from typing import TYPE_CHECKING, Any

from fastparallel.backends.runner import is_coroutine_function
from fastparallel.errors import add_note, describe_item
from fastparallel.options import check_count, check_seconds

if TYPE_CHECKING:
    import asyncio

__all__ = ["parallel_async", "parallel_async_dict", "parallel_async_gen"]

Pair = tuple[int, Any]
Run = Callable[[int, Any], Coroutine[Any, Any, Pair]]

# Tasks left running after their stream ended (cancel_on_exit=False): asyncio keeps only
# weak references to tasks, so these are held here until they finish.
_detached: set[asyncio.Future[Any]] = set()


def _check(n_workers: Any, pause: Any, timeout: Any) -> tuple[float, float | None]:
    """The rules of :mod:`fastparallel.options`, as ``parallel()`` applies them; the pause
    (None: 0) and the timeout per item (None or 0: no limit) to use."""
    check_count("n_workers", n_workers, 1, why="items awaited at once")
    pause = check_seconds("pause", pause, none="no pause")
    timeout = check_seconds("timeout", timeout, none="no limit", limit=True)
    return pause or 0.0, timeout or None


def _runner(
    f: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    timeout: float | None,
    return_exceptions: bool,
) -> Run:
    """``run(i, item)``: ``(i, result)`` of ``f`` on one item, as fastcore computes it."""
    import asyncio

    awaits = is_coroutine_function(f)

    async def run(i: int, item: Any) -> Pair:
        work = f(item, *args, **kwargs) if awaits else asyncio.to_thread(f, item, *args, **kwargs)
        try:
            return i, await (asyncio.wait_for(work, timeout) if timeout else work)
        except Exception as exc:
            add_note(exc, f"fastparallel: raised by f on {describe_item(i, item)}")
            if return_exceptions:
                return i, exc
            raise

    return run


class _Stream:
    """The tasks of one ``parallel_async_gen``; each finished task goes to ``finished``."""

    def __init__(self, run: Run, n_workers: int, pause: float) -> None:
        import asyncio

        self.loop = asyncio.get_running_loop()
        self.run = run
        self.pause = pause
        self.slots = asyncio.Semaphore(n_workers)
        self.finished: asyncio.Queue[asyncio.Future[Any]] = asyncio.Queue()
        self.tasks: set[asyncio.Future[Any]] = set()

    def track(self, task: asyncio.Future[Any]) -> None:
        self.tasks.add(task)
        task.add_done_callback(self._finish)

    def _finish(self, task: asyncio.Future[Any]) -> None:
        self.tasks.discard(task)
        self.finished.put_nowait(task)

    def _item_done(self, task: asyncio.Future[Any]) -> None:
        self.slots.release()

    async def feed(self, items: Iterable[Any]) -> int:
        """Start a task per item, ``n_workers`` at once, item ``i`` no sooner than ``i * pause``
        seconds from the start; the number of items."""
        import asyncio

        began = self.loop.time()
        count = 0
        for i, item in enumerate(items):
            await self.slots.acquire()
            delay = began + i * self.pause - self.loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            task = self.loop.create_task(self.run(i, item))
            task.add_done_callback(self._item_done)
            self.track(task)
            count += 1
        return count

    async def cancel(self) -> None:
        """Cancel every task still running and wait until they have finished."""
        import asyncio

        tasks = list(self.tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def detach(self) -> None:
        """Let the tasks still running finish in the background, their errors read and dropped."""
        for task in self.tasks:
            _detached.add(task)
            task.add_done_callback(_forget)


def _forget(task: asyncio.Future[Any]) -> None:
    _detached.discard(task)
    if not task.cancelled():
        task.exception()  # read: asyncio would log it as never retrieved


async def parallel_async_gen(
    f: Callable[..., Any],
    items: Iterable[Any],
    /,
    *args: Any,
    n_workers: int = 16,
    pause: float | None = 0,
    timeout: float | None = None,
    return_exceptions: bool = False,
    cancel_on_exit: bool = True,
    **kwargs: Any,
) -> AsyncIterator[Pair]:
    """Yield ``(index, result)`` pairs of ``f`` on each of ``items``, in completion order.

    Like ``fastcore.parallel.parallel_async_gen``: ``f(item, *args, **kwargs)`` is
    awaited if ``f`` is a coroutine function, else run in a thread; at most
    ``n_workers`` at once; item ``i`` starts no sooner than ``i * pause`` seconds after
    the first; ``timeout`` is per item (``asyncio.TimeoutError``; None, 0 or ``math.inf``: no
    limit). Bad values are refused by the rules of ``parallel()``, before any item starts.

    Args:
        f: a coroutine function, or a plain function (run with ``asyncio.to_thread``).
        items: any iterable, read as items start.
        *args: positional arguments passed after the item.
        n_workers: items running at once.
        pause: seconds between the scheduled starts of consecutive items.
        timeout: seconds allowed for each item.
        return_exceptions: yield an item's exception as its result instead of raising it.
        cancel_on_exit: when the stream ends early (an error, ``break`` and close), cancel
            the items still running and wait for them; False lets them finish in the
            background.
        **kwargs: keyword arguments passed to ``f``.

    Example:
        >>> import asyncio
        >>> async def wait_then(i):
        ...     await asyncio.sleep((3 - i) / 50)
        ...     return i * 2
        >>> async def main():
        ...     return [pair async for pair in parallel_async_gen(wait_then, range(3))]
        >>> asyncio.run(main())
        [(2, 4), (1, 2), (0, 0)]
    """
    pause, timeout = _check(n_workers, pause, timeout)
    stream = _Stream(_runner(f, args, kwargs, timeout, return_exceptions), n_workers, pause)
    feeder = stream.loop.create_task(stream.feed(items))
    stream.track(feeder)
    total, yielded = None, 0
    try:
        while total is None or yielded < total:
            task = await stream.finished.get()
            if task is feeder:
                total = feeder.result()  # raises what the input iterable raised
            else:
                yielded += 1
                yield task.result()
    finally:
        if cancel_on_exit:
            await stream.cancel()
        else:
            stream.detach()


async def parallel_async_dict(
    f: Callable[..., Any], items: Iterable[Any], /, *args: Any, **kwargs: Any
) -> dict[int, Any]:
    """``{index: result}`` in completion order; the options of :func:`parallel_async_gen`.

    Example:
        >>> import asyncio
        >>> async def wait_then(i):
        ...     await asyncio.sleep((3 - i) / 50)
        ...     return i * 2
        >>> asyncio.run(parallel_async_dict(wait_then, range(3)))
        {2: 4, 1: 2, 0: 0}
    """
    return {i: r async for i, r in parallel_async_gen(f, items, *args, **kwargs)}


async def parallel_async(
    f: Callable[..., Any],
    items: Iterable[Any],
    /,
    *args: Any,
    n_workers: int = 16,
    pause: float | None = 0,
    timeout: float | None = None,
    return_exceptions: bool = False,
    cancel_on_error: bool = False,
    **kwargs: Any,
) -> list[Any]:
    """Await ``f(item, *args, **kwargs)`` on every item, ``n_workers`` at once; results in input order.

    Like ``fastcore.parallel.parallel_async`` (the result is a plain ``list``, not an
    ``L``); the options are those of :func:`parallel_async_gen`. The first error raised
    (in completion order) is raised here; ``cancel_on_error=True`` cancels the items
    still running first and waits for them, else they go on in the background.

    Example:
        >>> import asyncio
        >>> async def double(x):
        ...     await asyncio.sleep(0.01)
        ...     return 2 * x
        >>> asyncio.run(parallel_async(double, range(5), n_workers=2))
        [0, 2, 4, 6, 8]
    """
    done = await parallel_async_dict(
        f,
        items,
        *args,
        n_workers=n_workers,
        pause=pause,
        timeout=timeout,
        return_exceptions=return_exceptions,
        cancel_on_exit=cancel_on_error,
        **kwargs,
    )
    return [done[i] for i in range(len(done))]
