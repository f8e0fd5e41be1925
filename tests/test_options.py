"""The options of ``parallel()``, ``parallel_async()`` and ``advise()``: one set of rules,
checked before anything starts, and seconds too long to wait meaning no limit (issue 21.6)."""

from __future__ import annotations

import asyncio
import math

import pytest

from fastparallel import advise, parallel, parallel_async, shutdown
from fastparallel.options import FOREVER, Options, check_count, check_seconds

pytestmark = pytest.mark.unit

HUGE = (math.inf, 1e300, FOREVER)


# -- timeouts too long to reach mean no limit; pauses and delays that long are refused ------


@pytest.mark.parametrize("value", HUGE)
@pytest.mark.parametrize("name", ["timeout", "item_timeout"])
def test_a_timeout_too_long_to_reach_means_no_limit(name, value):
    assert getattr(Options(**{name: value}), name) is None


@pytest.mark.parametrize("value", HUGE)
@pytest.mark.parametrize("name", ["timeout", "item_timeout"])
@pytest.mark.parametrize("mode", [{"n_workers": 0}, {"threadpool": True, "n_workers": 2}])
def test_a_huge_timeout_runs_to_the_end_in_this_process(mode, name, value):
    assert parallel(abs, [-1, -2, -3], **mode, **{name: value}) == [1, 2, 3]


@pytest.mark.integration
@pytest.mark.timeout(120)
@pytest.mark.parametrize("name", ["timeout", "item_timeout"])
def test_a_huge_timeout_runs_to_the_end_on_processes(name):
    for value in HUGE:
        assert parallel(abs, [-1, -2, -3], n_workers=2, **{name: value}) == [1, 2, 3]


@pytest.mark.integration
@pytest.mark.timeout(120)
@pytest.mark.parametrize("mode", [{"n_workers": 0}, {"threadpool": True, "n_workers": 2}, {}])
def test_a_long_but_finite_timeout_is_honoured_without_overflow(mode):
    """A month, a year, a century: below FOREVER, a real deadline, waited for an hour at a
    time (the processes' poll takes at most about 24 days at once)."""
    for value in (30 * 86400, 365 * 86400, FOREVER / 2):
        assert parallel(abs, [-1, -2], timeout=value, item_timeout=value, **mode) == [1, 2]


@pytest.mark.parametrize("value", [*HUGE, math.nan, -math.inf])
@pytest.mark.parametrize("name", ["pause", "retry_delay"])
def test_a_pause_or_delay_that_would_wait_forever_is_refused(name, value):
    error = ValueError if not math.isnan(value) else TypeError
    with pytest.raises(error, match=name):
        Options(**{name: value})


@pytest.mark.parametrize("value", HUGE)
@pytest.mark.parametrize("mode", [{"n_workers": 0}, {"threadpool": True, "n_workers": 2}, {}])
def test_a_huge_pause_is_refused_before_anything_runs(mode, value):
    shutdown()
    ran = []
    with pytest.raises(ValueError, match="pause=.* would wait forever"):
        parallel(ran.append, [1, 2], pause=value, **mode)
    assert not ran


@pytest.mark.parametrize("name", ["timeout", "item_timeout", "pause"])
def test_nan_is_refused(name):
    with pytest.raises(TypeError, match=name):
        parallel(abs, [1], n_workers=0, **{name: math.nan})


@pytest.mark.parametrize("mode", [{"n_workers": 0}, {"threadpool": True, "n_workers": 2}])
def test_the_retry_delay_stops_doubling_before_it_overflows(mode, monkeypatch):
    """Attempt 1100 would wait retry_delay * 2 ** 1099 seconds: more than a float holds."""
    from fastparallel.core import retries

    waits = []
    push = retries.heapq.heappush

    def record(heap, entry):
        waits.append(entry[0])
        push(heap, (0.0, *entry[1:]))  # due at once: the test does not wait

    monkeypatch.setattr(retries.heapq, "heappush", record)
    calls = []

    def fails_often(x):
        calls.append(x)
        if len(calls) < 1100:
            raise ValueError("again")
        return x

    assert parallel(fails_often, [7], retries=2000, retry_delay=1e-3, **mode) == [7]
    assert len(waits) == 1099
    assert all(math.isfinite(w) for w in waits)


# -- the same rules in parallel(), parallel_async() and advise() ----------------------------


def test_check_count_messages_say_what_to_give():
    with pytest.raises(TypeError, match=r"n_workers must be an int >= 1.* got float: 1\.5"):
        check_count("n_workers", 1.5, 1, none="the default")
    with pytest.raises(ValueError, match=r"chunksize must be an int >= 1, or None \(x\), got 0"):
        check_count("chunksize", 0, 1, none="x")
    check_count("n_workers", None, 1, none="the default")
    with pytest.raises(TypeError):
        check_count("n_workers", None, 1)  # None is refused where nothing says what it means
    with pytest.raises(TypeError):
        check_count("n_workers", True, 0)


def test_check_seconds():
    assert check_seconds("timeout", None, none="no limit") is None
    assert check_seconds("timeout", 0, none="no limit") == 0
    with pytest.raises(ValueError, match="> 0"):
        check_seconds("item_timeout", 0, zero=False)
    with pytest.raises(TypeError, match="number of seconds"):
        check_seconds("timeout", "1")
    with pytest.raises(TypeError):
        check_seconds("pause", None)


BAD = [
    ({"n_workers": -1}, ValueError),
    ({"n_workers": 1.5}, TypeError),
    ({"n_workers": True}, TypeError),
    ({"total": -1}, ValueError),
    ({"total": 2.5}, TypeError),
]


@pytest.mark.parametrize("kwargs, error", BAD)
def test_parallel_and_advise_refuse_the_same_values(kwargs, error):
    with pytest.raises(error, match=next(iter(kwargs))):
        parallel(abs, [1], **kwargs)
    with pytest.raises(error, match=next(iter(kwargs))):
        advise(abs, [1], **kwargs)


@pytest.mark.parametrize(
    "kwargs, error",
    [
        ({"n_workers": 0}, ValueError),
        ({"n_workers": 1.5}, TypeError),
        ({"pause": -1}, ValueError),
        ({"pause": math.inf}, ValueError),
        ({"timeout": math.nan}, TypeError),
        ({"timeout": "1"}, TypeError),
    ],
)
def test_parallel_async_refuses_as_parallel_does(kwargs, error):
    ran = []

    async def record(x):
        ran.append(x)

    with pytest.raises(error, match=next(iter(kwargs))):
        asyncio.run(parallel_async(record, [1], **kwargs))
    assert not ran


def test_parallel_async_with_an_infinite_timeout_has_no_limit():
    async def double(x):
        return 2 * x

    assert asyncio.run(parallel_async(double, [1, 2], timeout=math.inf)) == [2, 4]


def test_advise_refuses_an_endless_max_seconds():
    with pytest.raises(ValueError, match="max_seconds"):
        advise(abs, [1], max_seconds=math.inf)
