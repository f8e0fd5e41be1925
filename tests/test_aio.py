"""parallel_async, parallel_async_gen and parallel_async_dict: fastcore's semantics, on the caller's loop.

Completion order and cancellation are forced with asyncio events; the few timed checks
(pause, per-item timeout) use generous bounds.
"""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from fastparallel import parallel_async, parallel_async_dict, parallel_async_gen

pytestmark = pytest.mark.unit


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


async def echo(item, *args, **kwargs):
    await asyncio.sleep(0)
    return item, args, kwargs


def echo_in_thread(item, *args, **kwargs):
    return item, args, kwargs, threading.get_ident()


def test_item_first_then_args_and_kwargs():
    assert run(parallel_async(echo, [1, 2], "a", k=3)) == [
        (1, ("a",), {"k": 3}),
        (2, ("a",), {"k": 3}),
    ]


def test_plain_functions_run_in_threads():
    out = run(parallel_async(echo_in_thread, [1, 2], "a", k=3))
    assert [o[:3] for o in out] == [(1, ("a",), {"k": 3}), (2, ("a",), {"k": 3})]
    assert threading.get_ident() not in {o[3] for o in out}


def test_results_in_input_order_and_a_plain_list():
    async def later_first(i):
        await asyncio.sleep((5 - i) / 100)
        return i * 10

    out = run(parallel_async(later_first, range(6)))
    assert out == [0, 10, 20, 30, 40, 50] and type(out) is list


class Chain:
    """Items finish in the order given: each waits for the one before it in ``order``."""

    def __init__(self, order):
        self.order = list(order)
        self.events = None

    async def __call__(self, i):
        if self.events is None:
            self.events = {j: asyncio.Event() for j in self.order}
        at = self.order.index(i)
        if at:
            await self.events[self.order[at - 1]].wait()
        await asyncio.sleep(0)  # the item before is yielded first
        self.events[i].set()
        return i * 2


def test_gen_yields_index_result_pairs_in_completion_order():
    async def main():
        return [pair async for pair in parallel_async_gen(Chain([2, 0, 3, 1]), range(4))]

    assert run(main()) == [(2, 4), (0, 0), (3, 6), (1, 2)]
    assert list(run(parallel_async_dict(Chain([1, 0]), range(2)))) == [1, 0]


@pytest.mark.parametrize("n_workers", [1, 3])
def test_at_most_n_workers_at_once(n_workers):
    running, most = 0, 0

    async def fn(i):
        nonlocal running, most
        running += 1
        most = max(most, running)
        for _ in range(3):
            await asyncio.sleep(0)
        running -= 1
        return i

    assert run(parallel_async(fn, range(10), n_workers=n_workers)) == list(range(10))
    assert most == n_workers


def test_timeout_is_per_item():
    async def slow(i):
        await asyncio.sleep(0.05)
        return i

    # 8 items one at a time take 0.4 s, longer than the timeout, each far less.
    assert run(parallel_async(slow, range(8), n_workers=1, timeout=0.25)) == list(range(8))

    async def stuck_on_one(i):
        if i == 1:
            await asyncio.Event().wait()
        return i

    out = run(parallel_async(stuck_on_one, range(3), timeout=0.2, return_exceptions=True))
    assert out[0] == 0 and out[2] == 2 and isinstance(out[1], asyncio.TimeoutError)
    with pytest.raises(asyncio.TimeoutError):  # the built-in TimeoutError from Python 3.11 on
        run(parallel_async(stuck_on_one, range(3), timeout=0.2))


def test_return_exceptions_and_the_note_naming_the_item():
    async def fail_on_two(i):
        if i == 2:
            raise KeyError(i)
        return i

    out = run(parallel_async(fail_on_two, range(4), return_exceptions=True))
    assert out[:2] == [0, 1] and out[3] == 3 and isinstance(out[2], KeyError)
    with pytest.raises(KeyError) as info:
        run(parallel_async(fail_on_two, range(4)))
    assert "item 2 (2)" in " ".join(info.value.__notes__)


class FailAfterOthersStart:
    """Item 0 fails once the others run; the others wait for ``release``."""

    def __init__(self, n):
        self.n = n
        self.started, self.cancelled, self.finished = set(), set(), set()
        self.all_started = self.release = None

    async def __call__(self, i):
        if self.release is None:
            self.all_started, self.release = asyncio.Event(), asyncio.Event()
        self.started.add(i)
        if len(self.started) == self.n:
            self.all_started.set()
        if i == 0:
            await self.all_started.wait()
            raise ValueError("zero")
        try:
            await self.release.wait()
        except asyncio.CancelledError:
            self.cancelled.add(i)
            raise
        self.finished.add(i)
        return i


def test_cancel_on_error_cancels_the_rest_before_raising():
    fn = FailAfterOthersStart(4)
    with pytest.raises(ValueError, match="zero"):
        run(parallel_async(fn, range(4), cancel_on_error=True))
    assert fn.cancelled == {1, 2, 3} and not fn.finished


def test_without_cancel_on_error_the_rest_go_on_in_the_background():
    fn = FailAfterOthersStart(4)

    async def main():
        with pytest.raises(ValueError, match="zero"):
            await parallel_async(fn, range(4))
        assert not fn.cancelled
        fn.release.set()
        while len(fn.finished) < 3:
            await asyncio.sleep(0.01)

    run(main())
    assert fn.finished == {1, 2, 3} and not fn.cancelled


def test_closing_the_gen_early_cancels_the_rest():
    started, cancelled = set(), set()
    others_run = None

    async def fn(i):
        nonlocal others_run
        others_run = others_run or asyncio.Event()
        if i == 0:  # returns once the others wait
            await others_run.wait()
            return i
        started.add(i)
        if len(started) == 3:
            others_run.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.add(i)
            raise

    async def main():
        gen = parallel_async_gen(fn, range(4))
        assert await gen.__anext__() == (0, 0)
        await gen.aclose()
        assert cancelled == {1, 2, 3}  # cancelled and waited for by aclose()

    run(main())


def test_pause_delays_item_i_by_i_times_pause():
    starts = {}

    async def stamp(i):
        starts[i] = time.monotonic()
        return i

    async def main():
        began = time.monotonic()
        await parallel_async(stamp, range(4), pause=0.1)
        return began

    began = run(main())
    for i, at in starts.items():
        assert at - began >= 0.09 * i


def test_input_is_read_as_items_start():
    read = []

    def items():
        for i in range(1000):
            read.append(i)
            yield i

    async def main():
        async for i, _ in parallel_async_gen(echo, items(), n_workers=2):
            if i == 0:
                break

    run(main())
    assert len(read) < 20  # not the 1000 items fastcore reads first


def test_errors_from_the_input_are_raised():
    def items():
        yield 1
        raise OSError("disk gone")

    with pytest.raises(OSError, match="disk gone"):
        run(parallel_async(echo, items()))


@pytest.mark.parametrize(
    "kwargs, error",
    [
        ({"n_workers": 0}, ValueError),
        ({"n_workers": None}, TypeError),
        ({"pause": -1}, ValueError),
        ({"timeout": "1"}, TypeError),
    ],
)
def test_bad_arguments(kwargs, error):
    """The rules of parallel(): a value of the wrong type is a TypeError, out of range a ValueError."""
    with pytest.raises(error, match=next(iter(kwargs))):
        run(parallel_async(echo, [1], **kwargs))
