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
    import heapq
    from types import SimpleNamespace

    from fastparallel.core import retries

    waits = []

    def record(heap, entry):
        waits.append(entry[0])
        heapq.heappush(heap, (0.0, *entry[1:]))  # due at once: the test does not wait

    # Only the retry queue's heapq is replaced, not the module everyone shares.
    monkeypatch.setattr(retries, "heapq", SimpleNamespace(**{**vars(heapq), "heappush": record}))
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


# -- the options are declared once: what is written from OPTIONS is up to date ---------------


def test_the_generated_keywords_and_docs_are_up_to_date():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "tools" / "generate_options.py"
    spec = importlib.util.spec_from_file_location("generate_options", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.stale() == [], "run: python tools/generate_options.py"


# parallel()'s keywords as fastcore.parallel.parallel has them, in order, then fastparallel's.
FASTCORE = [
    "n_workers",
    "threadpool",
    "progress",
    "total",
    "chunksize",
    "timeout",
    "pause",
    "method",
]


def test_parallel_signature_is_the_declared_options_in_order():
    import inspect

    from fastparallel.options import OPTIONS

    parameters = inspect.signature(parallel).parameters
    names = list(parameters)
    assert names[:3] == ["fn", "items", "args"] and names[-1] == "kwargs"
    assert names[3:-1] == [option.name for option in OPTIONS]
    assert names[3 : 3 + len(FASTCORE)] == FASTCORE
    for option in OPTIONS:
        parameter = parameters[option.name]
        assert parameter.kind is inspect.Parameter.KEYWORD_ONLY
        assert parameter.default == option.default
        assert parameter.annotation == option.hint  # from __future__ import annotations
        assert f"{option.name}: " in parallel.__doc__
    assert parameters["timeout"].default is None and parameters["pause"].default == 0
    assert parameters["return_as"].annotation == "ReturnAs"


def test_advise_takes_the_options_declared_for_it():
    import inspect

    from fastparallel.options import OPTIONS

    own = ("fn", "items", "args", "kwargs", "max_seconds")
    names = [name for name in inspect.signature(advise).parameters if name not in own]
    assert names == [option.name for option in OPTIONS if option.advise]


# -- inner_threads and max_memory (issue 18): declared, checked, carried in Options ----------


def test_inner_threads_and_max_memory_are_carried_in_options():
    options = Options(n_workers=2, inner_threads=3, max_memory="1.5 GiB")
    assert options.inner_threads == 3
    assert options.max_memory == 1610612736
    assert Options().inner_threads is None and Options().max_memory is None
    assert Options(threadpool=True, inner_threads=2).inner_threads == 2  # threads when given
    assert Options(threadpool="auto", max_memory=10**9).decided("processes").max_memory == 10**9


@pytest.mark.parametrize(
    "text, size",
    [
        ("12GB", 12 * 1000**3),
        ("500MiB", 500 * 1024**2),
        ("1.5 GiB", 1610612736),
        ("2 kB", 2000),
        ("3KiB", 3072),
        ("1tb", 1000**4),
        ("7 TiB", 7 * 1024**4),
        ("100", 100),
        ("64 B", 64),
        (4096, 4096),
    ],
)
def test_max_memory_is_parsed_to_bytes(text, size):
    assert Options(max_memory=text).max_memory == size


@pytest.mark.parametrize(
    "bad, error",
    [
        ("twelve GB", ValueError),
        ("12 GX", ValueError),
        ("12 G B", ValueError),
        ("-1GB", ValueError),
        ("0MB", ValueError),
        ("nan GB", ValueError),
        ("inf GB", ValueError),
        ("", ValueError),
        (0, ValueError),
        (-5, ValueError),
        (1.5e9, TypeError),
        (True, TypeError),
    ],
)
def test_max_memory_junk_is_refused_with_what_to_give(bad, error):
    with pytest.raises(error, match=r"max_memory .*\"12GB\""):
        parallel(abs, [1], n_workers=0, max_memory=bad)


@pytest.mark.parametrize("bad, error", [(0, ValueError), (-1, ValueError), (2.0, TypeError)])
def test_inner_threads_must_be_an_int_of_at_least_one(bad, error):
    with pytest.raises(error, match="inner_threads must be an int >= 1"):
        parallel(abs, [1], n_workers=0, inner_threads=bad)


@pytest.mark.parametrize("kwargs", [{"inner_threads": 2}, {"max_memory": "1GB"}])
def test_inner_threads_and_max_memory_are_refused_with_an_executor(kwargs):
    from concurrent.futures import ThreadPoolExecutor

    ran = []
    match = f"{next(iter(kwargs))} cannot be used with executor="
    with ThreadPoolExecutor(1) as executor, pytest.raises(ValueError, match=match):
        parallel(ran.append, [1], executor=executor, **kwargs)
    assert not ran


@pytest.mark.parametrize("kwargs", [{"inner_threads": 2}, {"max_memory": "1GB"}])
def test_inner_threads_and_max_memory_are_refused_with_a_coroutine_function(kwargs):
    async def double(x):
        return 2 * x

    with pytest.raises(ValueError, match="cannot be used with a coroutine function"):
        parallel(double, [1], **kwargs)


def test_advise_checks_inner_threads_and_max_memory_as_parallel_does():
    with pytest.raises(ValueError, match="max_memory"):
        advise(abs, [1], max_memory="lots")
    with pytest.raises(ValueError, match="inner_threads"):
        advise(abs, [1], inner_threads=0)


# -- the public names: written once, nothing else in dir() ----------------------------------


def test_the_public_names_are_written_once_and_dir_shows_only_them():
    import ast
    from pathlib import Path

    import fastparallel

    names = dir(fastparallel)
    assert len(names) == len(set(names))
    assert not {"TYPE_CHECKING", "importlib", "_import_module", "annotations"} & set(names)
    assert not hasattr(fastparallel, "TYPE_CHECKING")
    public = [name for name in names if not name.startswith("__")]
    assert sorted(public) == sorted(name for name in fastparallel.__all__ if name != "__version__")
    for name in fastparallel.__all__:
        assert getattr(fastparallel, name) is not None, name
    # The imports type checkers read name the same objects as the imports on first use.
    tree = ast.parse(Path(fastparallel.__file__).read_text())
    static = {
        alias.asname: node.module
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module.startswith("fastparallel")
        for alias in node.names
    }
    assert static == fastparallel._WHERE


def test_the_types_users_annotate_with_are_public():
    import fastparallel
    from fastparallel.auto.model import Measurements, PickleCost, StartSource
    from fastparallel.options import ProgressCallback, ReturnAs, Threadpool

    assert fastparallel.ReturnAs is ReturnAs and fastparallel.Threadpool is Threadpool
    assert fastparallel.ProgressCallback is ProgressCallback
    assert fastparallel.Measurements is Measurements and fastparallel.PickleCost is PickleCost
    assert fastparallel.StartSource is StartSource  # Measurements.start_source
    assert "fastparallel.Measurements" in fastparallel.Advice.__doc__
