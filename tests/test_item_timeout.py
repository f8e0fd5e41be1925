"""item_timeout: a stuck item fails alone, on processes, threads, serially and on coroutines.

Stuck items never return by themselves: a worker process loops forever (it must be
killed), a thread waits on an event that the test releases when it ends. Times are
checked against generous bounds only; nothing is ordered by sleeping.
"""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.integration

if str(Path(__file__).resolve().parent) not in sys.path:  # workers import the helpers by name
    sys.path.insert(0, str(Path(__file__).resolve().parent))

import faults_helpers as h
import resilience_helpers as r

from fastparallel import ItemTimeoutError, ParallelTimeoutError, parallel

NW = 2
POOLS = {"processes": {}, "threads": {"threadpool": True}}
LIMIT = 1.0
SLACK = 1.0  # "raised promptly": within this long after the deadline (the issue says well within a second)


@pytest.fixture
def release() -> Any:
    """An event that stuck worker threads wait on; set when the test ends."""
    event = threading.Event()
    yield event
    event.set()


def _stuck_kwargs(backend: str, event: threading.Event) -> dict[str, Any]:
    return {"event": event} if backend == "threads" else {}


def _check_timeout_error(error: Any, index: int) -> None:
    assert isinstance(error, ItemTimeoutError), repr(error)
    assert isinstance(error, TimeoutError)
    assert error.index == index and error.seconds == LIMIT
    assert f"item {index} ({index})" in str(error) and f"item_timeout={LIMIT:g}s" in str(error), (
        str(error)
    )


@pytest.mark.timeout(60)
@pytest.mark.parametrize("chunksize", [None, 4])
@pytest.mark.parametrize("backend", list(POOLS))
def test_a_stuck_item_fails_alone(
    backend: str, chunksize: int | None, tmp_path: Path, release: Any
) -> None:
    out = parallel(
        r.stuck_on,
        range(12),
        n_workers=NW,
        chunksize=chunksize,
        item_timeout=LIMIT,
        return_exceptions=True,
        directory=str(tmp_path),
        stuck=(5,),
        **POOLS[backend],
        **_stuck_kwargs(backend, release),
    )
    _check_timeout_error(out[5], 5)
    assert [v[0] for i, v in enumerate(out) if i != 5] == [x * x for x in range(12) if x != 5]
    stuck_pid = r.attempts(tmp_path, 5)[0]["pid"]
    if backend == "processes":  # the stuck worker was killed, and the pool still works
        assert "was killed and replaced" in str(out[5])
        h.wait_gone([stuck_pid], h.PROMPT, "the killed worker")
        pids = set(parallel(h.getpid, range(20), n_workers=NW, chunksize=1))
        assert stuck_pid not in pids and len(pids) >= 1
    else:
        assert "abandoned" in str(out[5])
    assert parallel(r.square, range(10), n_workers=NW, **POOLS[backend]) == [
        x * x for x in range(10)
    ]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("backend", list(POOLS))
def test_without_return_exceptions_it_is_raised_promptly(
    backend: str, tmp_path: Path, release: Any
) -> None:
    began = time.monotonic()
    with pytest.raises(ItemTimeoutError) as info:
        parallel(
            r.stuck_on,
            range(6),
            n_workers=NW,
            chunksize=1,
            item_timeout=LIMIT,
            directory=str(tmp_path),
            stuck=(2,),
            **POOLS[backend],
            **_stuck_kwargs(backend, release),
        )
    caught = time.monotonic()
    _check_timeout_error(info.value, 2)
    started = r.attempts(tmp_path, 2)[0]["time"]  # written right after the item started
    h.record_timing(f"item_timeout-raise-{backend}", caught - started - LIMIT)
    assert caught - started >= LIMIT - 0.1, "failed before its deadline"
    assert caught - started < LIMIT + SLACK, (
        f"raised {caught - started - LIMIT:.2f}s after the deadline"
    )
    assert caught - began < LIMIT + h.PROMPT


@pytest.mark.timeout(60)
def test_a_replaced_thread_keeps_the_pool_width(tmp_path: Path, release: threading.Event) -> None:
    # Items 0 and 1 get stuck on both threads. Items 2 and 3 can only pass their barrier if
    # two threads run them at once: the two that replaced the abandoned ones.
    barrier = threading.Barrier(2)
    out = parallel(
        r.stuck_on,
        range(4),
        threadpool=True,
        n_workers=2,
        chunksize=1,
        item_timeout=2 * LIMIT,
        return_exceptions=True,
        directory=str(tmp_path),
        stuck=(0, 1),
        event=release,
        barrier=barrier,
    )
    assert all(isinstance(v, ItemTimeoutError) for v in out[:2]), out
    assert [v[0] for v in out[2:]] == [4, 9], out
    stuck_threads = {r.attempts(tmp_path, x)[0]["thread"] for x in (0, 1)}
    new_threads = {v[1] for v in out[2:]}
    assert len(new_threads) == 2 and not new_threads & stuck_threads


@pytest.mark.timeout(60)
def test_a_stuck_thread_does_not_block_interpreter_exit(tmp_path: Path) -> None:
    body = """
    import threading
    def hang(x):
        if x == 1:
            threading.Event().wait()  # forever
        return x
    if __name__ == "__main__":
        out = parallel(hang, range(4), threadpool=True, n_workers=2, item_timeout=0.5, return_exceptions=True)
        print([type(v).__name__ for v in out], flush=True)
    """
    began = time.monotonic()
    done = h.run_script(tmp_path, body, timeout=30)
    assert done.returncode == 0, done.stderr
    assert "['int', 'ItemTimeoutError', 'int', 'int']" in done.stdout
    assert time.monotonic() - began < 20


def _slow_on(x: int, *, slow: int, seconds: float) -> int:
    if x == slow:
        time.sleep(seconds)  # the work itself: nothing can interrupt the caller's thread
    return x * x


def test_serially_an_item_fails_when_it_returns_late() -> None:
    ran = []

    def fn(x: int) -> int:
        ran.append(x)
        return _slow_on(x, slow=2, seconds=0.5)

    out = parallel(fn, range(5), n_workers=0, item_timeout=0.2, return_exceptions=True)
    assert isinstance(out[2], ItemTimeoutError) and out[2].index == 2
    assert "failed when it returned" in str(out[2])
    assert out[:2] + out[3:] == [0, 1, 9, 16]
    assert ran == [0, 1, 2, 3, 4]  # it ran to its end, and the rest went on
    with pytest.raises(ItemTimeoutError, match=r"item 2 \(2\)"):
        parallel(_slow_on, range(5), n_workers=0, item_timeout=0.2, slow=2, seconds=0.5)
    assert parallel(_slow_on, range(5), n_workers=0, item_timeout=5, slow=2, seconds=0.01) == [
        0,
        1,
        4,
        9,
        16,
    ]


async def _await_forever_on(x: int, *, target: int) -> int:
    if x == target:
        await asyncio.Event().wait()
    await asyncio.sleep(0)
    return x * x


@pytest.mark.timeout(60)
def test_coroutines_are_cancelled_at_their_deadline() -> None:
    out = parallel(
        _await_forever_on,
        range(8),
        n_workers=3,
        item_timeout=LIMIT,
        return_exceptions=True,
        target=4,
    )
    _check_timeout_error(out[4], 4)
    assert out[:4] + out[5:] == [x * x for x in range(8) if x != 4]
    began = time.monotonic()
    with pytest.raises(ItemTimeoutError):
        parallel(_await_forever_on, range(8), n_workers=3, item_timeout=LIMIT, target=4)
    assert time.monotonic() - began < LIMIT + h.PROMPT


@pytest.mark.parametrize("backend", ["processes", "threads", "serial"])
def test_many_quick_items_never_time_out(backend: str) -> None:
    # Every item starts and ends far within the limit: the timed loop must not fail any
    # (no torn read of a worker's slot passes for an old start).
    kwargs = {"serial": {"n_workers": 0}, **POOLS}[backend]
    items = range(20_000)
    assert parallel(r.square, items, item_timeout=30, **kwargs) == [x * x for x in items]


@pytest.mark.timeout(60)
def test_the_whole_call_timeout_keeps_its_meaning(tmp_path: Path) -> None:
    # item_timeout is longer than timeout: the call's deadline comes first.
    with pytest.raises(ParallelTimeoutError):
        parallel(
            r.stuck_on,
            range(4),
            n_workers=NW,
            item_timeout=30,
            timeout=LIMIT,
            directory=str(tmp_path),
            stuck=(1,),
        )


def test_an_index_left_by_an_earlier_call_is_not_taken_for_a_running_item() -> None:
    # A warm worker's slot keeps the index of the last item of an untimed call (0 here) and
    # the start time of an older timed one: the next timed call must not read them as its
    # item 0 running since long ago.
    assert parallel(r.square, [3], n_workers=1, item_timeout=30) == [9]
    assert parallel(time.sleep, [0.3], n_workers=1) == [None]  # the work itself, in the worker
    assert parallel(r.square, range(4), n_workers=1, item_timeout=0.25) == [0, 1, 4, 9]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_multiprocessing_start_methods_time_out_too(method: str, tmp_path: Path) -> None:
    # Their slot is a RawArray of two int64s instead of the template launcher's memfd.
    out = parallel(
        r.stuck_on,
        range(6),
        n_workers=NW,
        method=method,
        item_timeout=LIMIT,
        return_exceptions=True,
        directory=str(tmp_path),
        stuck=(3,),
    )
    _check_timeout_error(out[3], 3)
    assert [v[0] for i, v in enumerate(out) if i != 3] == [x * x for x in range(6) if x != 3]
    h.wait_gone([r.attempts(tmp_path, 3)[0]["pid"]], h.PROMPT, "the killed worker")


@pytest.mark.timeout(60)
def test_the_finished_items_of_an_abandoned_thread_run_once(
    tmp_path: Path, release: threading.Event
) -> None:
    # One chunk of 6 on one thread: items 0 and 1 finish, item 2 gets stuck. 0 and 1 keep
    # their results (a request is not sent twice); 3, 4 and 5 run on the new thread.
    out = parallel(
        r.stuck_on,
        range(6),
        threadpool=True,
        n_workers=1,
        chunksize=6,
        item_timeout=LIMIT,
        return_exceptions=True,
        directory=str(tmp_path),
        stuck=(2,),
        event=release,
    )
    _check_timeout_error(out[2], 2)
    assert [v[0] for i, v in enumerate(out) if i != 2] == [0, 1, 9, 16, 25]
    assert [len(r.attempts(tmp_path, x)) for x in range(6)] == [1] * 6
    assert (
        out[0][1] == out[1][1] != out[3][1]
    )  # 0 and 1 on the abandoned thread, 3 on its replacement
