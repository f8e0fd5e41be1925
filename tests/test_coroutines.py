"""parallel() with a coroutine function: items run as tasks on an event loop in a helper thread.

Order between coroutines is forced with asyncio events, never with sleeps; the tests
check results, the bound on concurrency, cancellation on every way of giving up, and the
options refused before any work.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import signal
import threading
import time
from pathlib import Path

import faults_helpers as h
import pytest

import fastparallel
from fastparallel import ParallelTimeoutError, parallel
from fastparallel.options import COROUTINE_WORKERS

pytestmark = pytest.mark.integration


async def ordered_call(a, b, item, c=0, d=0):
    await asyncio.sleep(0)
    return (a, b, item, c, d)


async def double(x):
    return 2 * x


class Tracker:
    """Counts the coroutines running at once; ``gate`` opens once ``expected`` run together."""

    def __init__(self, expected: int):
        self.expected = expected
        self.running = 0
        self.most = 0
        self.started: list[int] = []
        self.cancelled: list[int] = []
        self.gate: asyncio.Event | None = None  # created on the loop that runs the items

    async def enter(self, x: int) -> None:
        if self.gate is None:
            self.gate = asyncio.Event()
        self.started.append(x)
        self.running += 1
        self.most = max(self.most, self.running)
        if self.running >= self.expected:
            self.gate.set()

    async def wait_for_all(self) -> None:
        assert self.gate is not None
        await asyncio.wait_for(
            self.gate.wait(), 20
        )  # fails instead of hanging if the bound is too low

    async def bounded(self, x: int) -> int:
        await self.enter(x)
        try:
            await self.wait_for_all()
            for _ in range(3):  # let any item over the bound start while these still run
                await asyncio.sleep(0)
        finally:
            self.running -= 1
        return x

    async def forever(self, x: int) -> int:
        """Runs until cancelled (records it)."""
        await self.enter(x)
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled.append(x)
            raise
        return x


def loop_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "fastparallel-event-loop"]


# -- results, calling convention, what counts as a coroutine function -----------------------
def test_results_in_input_order_called_like_parallel():
    assert parallel(ordered_call, [1, 2, 3], "a", "b", c=5, d=6) == [
        ("a", "b", i, 5, 6) for i in [1, 2, 3]
    ]
    items = list(range(2000))
    assert parallel(double, items, n_workers=7) == [2 * x for x in items]
    assert parallel(double, iter(items), chunksize=3) == [2 * x for x in items]


class AsyncCallable:
    async def __call__(self, x):
        return x + 1

    async def method(self, x):
        return x + 2


def test_partials_methods_and_async_callables():
    assert parallel(functools.partial(ordered_call, "a", "b", d=1), [7]) == [("a", "b", 7, 0, 1)]
    assert parallel(AsyncCallable(), [1, 2]) == [2, 3]
    assert parallel(AsyncCallable().method, [1, 2]) == [3, 4]


def test_runs_on_a_loop_in_a_helper_thread_reused_between_calls():
    async def where(x):
        return threading.get_ident(), id(asyncio.get_running_loop())

    first = set(parallel(where, range(20)))
    second = set(parallel(where, range(20)))
    assert len(first) == 1 and first == second
    assert next(iter(first))[0] != threading.get_ident()


def test_threadpool_is_ignored():
    for threadpool in (True, False, 1, None):
        assert parallel(double, [1, 2], threadpool=threadpool) == [2, 4]


# -- how many run at once -----------------------------------------------------------------------
@pytest.mark.parametrize("n_workers, expected", [(4, 4), (None, COROUTINE_WORKERS), (0, 1)])
def test_at_most_n_workers_at_once(n_workers, expected):
    tracker = Tracker(expected)
    items = list(range(3 * expected + 2))
    assert parallel(tracker.bounded, items, n_workers=n_workers) == items
    assert tracker.most == expected


@pytest.mark.parametrize("chunksize", [None, 5])
def test_chunks_never_raise_the_bound(chunksize):
    tracker = Tracker(3)
    items = list(range(60))
    assert parallel(tracker.bounded, items, n_workers=3, chunksize=chunksize) == items
    assert tracker.most == 3


# -- from a running event loop, and from another thread ----------------------------------------
def test_called_from_inside_a_running_event_loop():
    async def main():
        return parallel(double, range(5), n_workers=2)  # blocks this loop meanwhile, as expected

    assert asyncio.run(main()) == [0, 2, 4, 6, 8]


def test_called_from_another_thread():
    out = {}
    thread = threading.Thread(target=lambda: out.update(r=parallel(double, range(5))))
    thread.start()
    thread.join(30)
    assert out["r"] == [0, 2, 4, 6, 8]


# -- return_as, progress -------------------------------------------------------------------------
def test_generators():
    events: dict[int, asyncio.Event] = {}

    async def finish_in_reverse(x):  # item 0 ends after item 1, item 1 after item 2
        events.setdefault(x, asyncio.Event())
        if x < 2:
            await events.setdefault(x + 1, asyncio.Event()).wait()
        events[x].set()
        return x

    unordered = parallel(
        finish_in_reverse, range(3), n_workers=3, chunksize=1, return_as="generator_unordered"
    )
    assert list(unordered) == [2, 1, 0]
    events.clear()
    assert list(
        parallel(finish_in_reverse, range(3), n_workers=3, chunksize=1, return_as="generator")
    ) == [0, 1, 2]


def test_progress_callback():
    seen = []
    assert parallel(
        double, range(10), progress=lambda done, total: seen.append((done, total))
    ) == list(range(0, 20, 2))
    assert seen[-1] == (10, 10)
    assert [done for done, _ in seen] == sorted(done for done, _ in seen)


# -- errors --------------------------------------------------------------------------------------
async def fail_on_three(x):
    await asyncio.sleep(0)
    if x == 3:
        raise KeyError(f"no {x}")
    return x


def test_error_keeps_type_and_traceback_and_names_the_item():
    with pytest.raises(KeyError) as info:
        parallel(fail_on_three, range(10))
    assert "item 3 (3)" in " ".join(info.value.__notes__)
    assert "fail_on_three" in "".join(__import__("traceback").format_exception(info.value))


def test_return_exceptions():
    out = parallel(fail_on_three, range(6), return_exceptions=True)
    assert out[:3] == [0, 1, 2] and out[4:] == [4, 5]
    assert isinstance(out[3], KeyError) and "item 3 (3)" in " ".join(out[3].__notes__)


def test_base_exceptions_from_the_coroutine_do_not_end_the_caller():
    async def interrupt(x):
        raise KeyboardInterrupt

    out = parallel(interrupt, [1], return_exceptions=True)
    assert isinstance(out[0], fastparallel.TaskExitError)
    assert parallel(double, [1]) == [2]  # the loop survived


def test_fail_fast_cancels_the_others():
    tracker = Tracker(4)

    async def fn(x):
        if x == 3:  # fail once the others run
            await tracker.enter(x)
            await tracker.wait_for_all()
            raise ValueError("three")
        return await tracker.forever(x)

    with pytest.raises(ValueError, match="three"):
        parallel(fn, range(10), n_workers=4, chunksize=1)
    assert sorted(tracker.cancelled) == [0, 1, 2]  # cancelled and unwound before parallel() raised
    assert sorted(tracker.started) == [0, 1, 2, 3]  # nothing more started


def test_timeout_cancels_outstanding_items():
    tracker = Tracker(2)

    async def fn(x):
        if x == 0:
            return x
        return await tracker.forever(x)

    began = time.monotonic()
    with pytest.raises(ParallelTimeoutError, match="1 of 5 items finished"):
        parallel(fn, range(5), n_workers=2, chunksize=1, timeout=0.5)
    assert time.monotonic() - began < h.PROMPT
    assert sorted(tracker.cancelled) == sorted(tracker.started) == [1, 2]


def test_closing_a_generator_cancels_the_rest():
    tracker = Tracker(3)

    async def fn(x):
        return x if x == 0 else await tracker.forever(x)

    gen = parallel(fn, range(10), n_workers=3, chunksize=1, return_as="generator_unordered")
    assert next(gen) == 0
    gen.close()
    assert sorted(tracker.cancelled) == sorted(tracker.started)
    assert len(tracker.started) <= 3


def test_a_given_up_loop_is_replaced_and_nothing_is_left_behind():
    async def fail(x):
        raise ValueError(x)

    with pytest.raises(ValueError):
        parallel(fail, range(3))
    assert parallel(double, [1]) == [2]
    fastparallel.shutdown()
    h.wait_for(lambda: not loop_threads(), 10, "event loop threads to end")


# -- options that mean nothing for coroutines ------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs",
    [
        {"method": "spawn"},
        {"max_tasks_per_child": 2},
        {"initializer": print},
        {"executor": object()},
    ],
)
def test_refused_options(kwargs):
    ran = []

    async def fn(x):
        ran.append(x)

    name = next(iter(kwargs))
    with pytest.raises(ValueError, match=f"{name} cannot be used with a coroutine function"):
        parallel(fn, [1], **kwargs)
    assert not ran


# -- Ctrl-C ----------------------------------------------------------------------------------------
CTRL_C_SCRIPT = """
import asyncio

async def block(marks, x):
    h.mark(marks, x)
    try:
        await asyncio.sleep(60)
    except asyncio.CancelledError:
        h.mark(marks, f"cancelled-{x}")
        raise

async def square(x):
    return x * x

if __name__ == "__main__":
    marks = OUT / "marks"
    marks.mkdir()
    try:
        parallel(block, range(4), str(marks), n_workers=2, chunksize=1)
        dump("first.json", {"caught": None})
    except KeyboardInterrupt:
        dump("first.json", {"caught": time.time()})
    dump("second.json", {"values": parallel(square, range(5))})
"""


@pytest.mark.timeout(60)
def test_ctrl_c_cancels_the_running_coroutines(tmp_path: Path):
    proc = h.start_script(tmp_path, CTRL_C_SCRIPT)
    try:
        h.wait_marks(tmp_path / "marks", 2)
        sent = time.time()
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            h.kill_session(proc.pid)
            proc.wait()
    assert proc.returncode == 0, (tmp_path / "stderr.txt").read_text()
    caught = json.loads((tmp_path / "first.json").read_text())["caught"]
    assert caught is not None and caught - sent < h.PROMPT
    assert set(h.read_marks(tmp_path / "marks")) == {
        "item-0",
        "item-1",
        "item-cancelled-0",
        "item-cancelled-1",
    }
    assert json.loads((tmp_path / "second.json").read_text())["values"] == [0, 1, 4, 9, 16]
