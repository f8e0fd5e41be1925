# ruff: noqa: B007, B018
# (fastcore's notebook examples are kept as they are written there.)
"""Drop-in fidelity with fastcore.parallel: its notebook's examples, its loose flag values, keyword names.

The examples below are copied from fastcore's own notebook (nbs/03a_parallel.ipynb,
fastcore 2.2.x), unchanged but for the import: they use ``parallel``,
``parallel_async``, ``parallel_async_gen`` and ``parallel_async_dict`` from
fastparallel, and fastcore's test helpers. Code at a notebook's top level that uses
``await`` sits in an ``async def`` here, run with ``asyncio.run``.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import random
import threading
import time
from contextlib import aclosing
from datetime import datetime

import pytest
from fastcore.test import expect_fail, test_eq

from fastparallel import parallel, parallel_async, parallel_async_dict, parallel_async_gen, shutdown

pytestmark = pytest.mark.integration

test_eq.__test__ = False  # fastcore's helper, not a test to collect


# -- fastcore's notebook: parallel --------------------------------------------------------------------
def _add_one(x, a=1):
    # this import is necessary for multiprocessing in notebook on windows
    import random

    time.sleep(random.random() / 80)
    return x + a


def print_time(i):
    time.sleep(random.random() / 1000)
    print(i, datetime.now())


def die_sometimes(x):
    if 3 < x < 6:
        raise Exception(f"exc: {x}")  # noqa: TRY002 - as in fastcore's example
    return x * 2


def test_notebook_parallel():
    inp, exp = range(50), range(1, 51)

    test_eq(parallel(_add_one, inp, n_workers=2), exp)
    test_eq(parallel(_add_one, inp, threadpool=True, n_workers=2), exp)
    test_eq(parallel(_add_one, inp, n_workers=1, a=2), range(2, 52))
    test_eq(parallel(_add_one, inp, n_workers=0), exp)
    test_eq(parallel(_add_one, inp, n_workers=0, a=2), range(2, 52))

    assert parallel(print_time, range(5), n_workers=2, pause=0.1) == [None] * 5

    out = parallel(die_sometimes, range(8), return_exceptions=True)
    assert [type(o) for o in out[4:6]] == [Exception, Exception]
    assert out[:4] + out[6:] == [0, 2, 4, 6, 12, 14]


# -- fastcore's notebook: parallel_async_gen, parallel_async_dict, parallel_async -----------------------
async def notebook_async_gen():
    async def wait_then(i):
        await asyncio.sleep((3 - i) / 20)
        return i * 2

    res = [(i, r) async for i, r in parallel_async_gen(wait_then, range(3))]
    test_eq(sorted(res), [(0, 0), (1, 2), (2, 4)])
    res

    done = []

    async def track(i):
        await asyncio.sleep(i / 50)
        done.append(i)
        return i

    async with aclosing(parallel_async_gen(track, range(10), n_workers=2)) as stream:
        async for i, r in stream:
            if len(done) == 2:
                break
    await asyncio.sleep(0.2)
    test_eq(done, [0, 1])
    done

    res = await parallel_async_dict(wait_then, range(3))
    test_eq(res, {0: 0, 1: 2, 2: 4})
    test_eq(list(res), [2, 1, 0])
    res


async def notebook_async():
    async def print_time_async(i):
        start = datetime.now()
        wait = random.random() / 30
        await asyncio.sleep(wait)
        print(i, start, datetime.now(), wait)
        if i == 5:
            raise Exception(f"exc {i}")  # noqa: TRY002 - as in fastcore's example
        return i

    res = await parallel_async(print_time_async, range(6), n_workers=3, return_exceptions=True)
    test_eq(res[:5], [0, 1, 2, 3, 4])
    test_eq(type(res[5]), Exception)

    await parallel_async(print_time_async, range(6), n_workers=3, pause=0.1, return_exceptions=True)

    async def maybe_fail(i: int):
        "Double i unless it's 3, in which case fail"
        await asyncio.sleep(random.random() / 50)
        if i == 3:
            raise ValueError(f"bad: {i}")
        return i * 2

    with expect_fail(ValueError, contains="bad: 3"):
        await parallel_async(maybe_fail, range(6), n_workers=3, cancel_on_error=True)

    with expect_fail(ValueError):
        await parallel_async(maybe_fail, range(6), n_workers=3)


def test_notebook_parallel_async_gen():
    asyncio.run(notebook_async_gen())


def test_notebook_parallel_async(capsys):
    asyncio.run(notebook_async())
    printed = [line for line in capsys.readouterr().out.split("\n") if line]
    assert len(printed) == 12  # every item of both calls ran


# -- fastcore's loose flag values ------------------------------------------------------------------------
def where(x):
    return os.getpid(), threading.get_ident()


@pytest.mark.parametrize(
    "threadpool, in_threads", [(1, True), (0, False), (None, False), (True, True)]
)
def test_threadpool_accepts_1_0_none(threadpool, in_threads):
    pids = {pid for pid, _ in parallel(where, range(4), threadpool=threadpool, n_workers=2)}
    assert (pids == {os.getpid()}) is in_threads


@pytest.mark.parametrize("progress, shown", [(1, True), (0, False), (None, False), (False, False)])
def test_progress_accepts_1_0_none(capsys, progress, shown):
    assert parallel(abs, [-1, -2], progress=progress, threadpool=True) == [1, 2]
    out = capsys.readouterr()
    assert bool(out.out + out.err) is shown


def test_pause_none_means_no_pause():
    began = time.monotonic()
    assert parallel(abs, [-1] * 20, pause=None, threadpool=True, chunksize=1) == [1] * 20
    assert time.monotonic() - began < 1.5


@pytest.mark.parametrize(
    "kwargs",
    [
        {"threadpool": 2},
        {"threadpool": "yes"},
        {"threadpool": 1.0},
        {"progress": 2},
        {"progress": "bar"},
        {"pause": "1"},
        {"pause": -0.1},
    ],
)
def test_other_flag_values_are_refused_before_any_work(kwargs):
    shutdown()
    called = []
    with pytest.raises((TypeError, ValueError)) as info:
        parallel(called.append, range(3), **kwargs)
    name = next(iter(kwargs))
    assert name in str(info.value)
    assert not called
    assert multiprocessing.active_children() == []


# -- keyword names that parallel() takes positionally ------------------------------------------------------
def named(x, fn=None, items=None):
    return x, fn, items


@pytest.mark.parametrize("backend", [{"n_workers": 0}, {"threadpool": True}, {}])
def test_keywords_named_fn_and_items_reach_the_function(backend):
    assert parallel(named, [1, 2], fn="z", items=3, **backend) == [(1, "z", 3), (2, "z", 3)]


def test_keywords_named_f_and_items_reach_the_async_functions():
    def f_named(x, f=None, items=None):
        return x, f, items

    out = asyncio.run(parallel_async(f_named, [1], f="g", items=4))
    assert out == [(1, "g", 4)]
