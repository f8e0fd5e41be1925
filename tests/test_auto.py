"""``threadpool="auto"``: the first items are measured, the rest run where the measurements say.

Each choice is checked by where the work actually ran (the process and thread each
result reports), not by what was logged. Which mode CPU-bound work should get rests on
timings, which a busy machine distorts: those tests check that the mode auto took is
the one the cost model gives for what was measured (``recommend`` is spied on), and
that the work ran there; ``test_model.py`` checks with injected measurements that the
model gives the right mode. Where a test needs a given mode to check what follows
(results kept, a later call, initializers), :func:`chooses` injects the choice. Only
waiting work (sleeps, HTTP) is left to choose by itself: it waits whatever the load.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

import fastparallel

if str(Path(__file__).resolve().parent) not in sys.path:  # workers import the helpers by name
    sys.path.insert(0, str(Path(__file__).resolve().parent))

from auto_helpers import (
    calls,
    counted,
    cpu_divide,
    cpu_where,
    fails_on,
    fetch_where,
    first_waits,
    inits,
    local_server,
    loops_for,
    note_start,
    sleep_where,
    sort_where,
    tiny_where,
    waits_for_file,
)

from fastparallel import ItemTimeoutError, parallel

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


@pytest.fixture(scope="module")
def loops_40ms() -> int:
    return loops_for(0.04)


@pytest.fixture(autouse=True)
def fresh_choices():
    """Each test measures for itself: no choice remembered from another test's call."""
    from fastparallel.auto import choose as auto

    auto.forget()
    yield
    auto.forget()


class Spy:
    """What ``recommend`` was given and gave, for each call auto made of it."""

    def __init__(self) -> None:
        self.calls: list[tuple[object, str]] = []

    @property
    def mode(self) -> str:
        """The mode of the call's own prediction (the first)."""
        return self.calls[0][1]

    @property
    def measured(self):
        return self.calls[0][0]


@pytest.fixture
def spy(monkeypatch) -> Spy:
    from fastparallel.auto import choose as auto

    seen, real = Spy(), auto.recommend

    def recommend(m, n_items, workers):
        mode, predicted = real(m, n_items, workers)
        seen.calls.append((m, mode))
        return mode, predicted

    monkeypatch.setattr(auto, "recommend", recommend)
    return seen


@pytest.fixture
def chooses(monkeypatch):
    """``chooses("processes")``: auto's cost model gives that mode, whatever it measured."""
    from fastparallel.auto import choose as auto

    real = auto.recommend

    def choose(mode: str) -> None:
        monkeypatch.setattr(auto, "recommend", lambda m, n, w: (mode, real(m, n, w)[1]))

    return choose


def _ran_as(mode: str, results) -> None:
    """Where the results say they ran fits ``mode``: after the probe's first items (on
    its one or two threads, in this process), in worker processes, on pool threads (not
    this one), or here."""
    pids, threads = _where(results)
    if mode == "processes":
        assert pids - {os.getpid()}, pids
        return
    assert pids == {os.getpid()}, (mode, pids)
    if mode == "threads":
        assert threading.get_ident() not in threads, threads
    else:
        assert mode == "serial" and len(threads - {threading.get_ident()}) <= 2, (mode, threads)


def _chosen(caplog: pytest.LogCaptureFixture) -> str:
    """The mode auto logged, e.g. "processes"."""
    messages = [r.getMessage() for r in caplog.records if r.getMessage().startswith("auto: ")]
    assert len(messages) == 1, messages
    return messages[0].split()[1]


def _logged(caplog: pytest.LogCaptureFixture, spy: Spy) -> str:
    """auto logged the mode the model gave (returned), or that every item ran while
    measuring (then they all ran in this process: "serial" is returned)."""
    mode = _chosen(caplog)
    if mode == "all":
        assert "ran while measuring them" in caplog.text
        return "serial"
    assert mode == spy.mode, caplog.text
    return mode


def _where(results) -> tuple[set[int], set[int]]:
    return {r[1] for r in results}, {r[2] for r in results}


def test_pure_python_runs_where_the_model_says(caplog, loops_40ms, spy):
    caplog.set_level(logging.INFO, logger="fastparallel")
    results = parallel(cpu_where, range(24), threadpool="auto", loops=loops_40ms)
    assert [r[0] for r in results] == list(range(24))
    _ran_as(_logged(caplog, spy), results)
    assert spy.measured.pickle_error is None and spy.measured.read >= 1


def test_pure_python_runs_on_processes_when_chosen(loops_40ms, chooses):
    chooses("processes")
    results = parallel(cpu_where, range(24), threadpool="auto", loops=loops_40ms)
    assert [r[0] for r in results] == list(range(24))
    pids = Counter(r[1] for r in results)
    others = {pid for pid in pids if pid != os.getpid()}
    # The probe ran the first items here (how many depends on the load); the pool's
    # processes ran the rest, the last one included.
    assert results[-1][1] in others, pids


def test_sleeps_run_on_threads(caplog):
    caplog.set_level(logging.INFO, logger="fastparallel")
    results = parallel(sleep_where, range(60), threadpool="auto", seconds=0.02)
    pids, threads = _where(results)
    assert pids == {os.getpid()}
    assert len(threads - {threading.get_ident()}) >= 3
    assert _chosen(caplog) == "threads"


def test_http_calls_run_where_the_model_says(caplog, spy):
    # The server runs in this process: its threads' work and GIL show in what the probe
    # measures, so on a busy machine the calls may not look like pure waits.
    caplog.set_level(logging.INFO, logger="fastparallel")
    with local_server(delay=0.02) as url:
        results = parallel(fetch_where, range(40), threadpool="auto", url=url)
    assert [r[0] for r in results] == [str(i) for i in range(40)]
    _ran_as(_logged(caplog, spy), results)


def test_numpy_that_releases_the_gil_runs_where_the_model_says(caplog, spy):
    np = pytest.importorskip("numpy")
    caplog.set_level(logging.INFO, logger="fastparallel")
    arrays = [np.random.default_rng(i).random(1_000_000) for i in range(16)]
    results = parallel(sort_where, arrays, threadpool="auto")
    assert all(np.array_equal(r[0], np.sort(a)) for r, a in zip(results, arrays, strict=True))
    _ran_as(_logged(caplog, spy), results)
    assert spy.measured.item is not None and spy.measured.item.nbytes > 7_000_000


def test_tiny_items_run_where_the_model_says(caplog, spy):
    caplog.set_level(logging.INFO, logger="fastparallel")
    results = parallel(tiny_where, range(2_000_000), threadpool="auto")
    assert len(results) == 2_000_000 and results[1] == 1 and results[2] == 0
    mode = _logged(caplog, spy)
    where = [r for r in results if isinstance(r, tuple)]
    _ran_as(mode, [(None, pid, thread) for pid, thread in where])
    ran_whole = _chosen(caplog) == "all"  # a fast machine: the probe finished the input
    if spy.mode == "serial" and not ran_whole:
        # The probe ran the first items on its threads, the rest ran here (how far the
        # probe got depends on the machine's load): the last items ran here.
        assert where[-1] == (os.getpid(), threading.get_ident()), Counter(where)


def test_unpicklable_fn_never_runs_on_processes_and_says_why(caplog, loops_40ms, spy):
    caplog.set_level(logging.INFO, logger="fastparallel")
    lock = threading.Lock()  # no pickler can send a lock to another process

    def locked_cpu(x):
        with lock:
            pass
        return cpu_where(x, loops_40ms)

    results = parallel(locked_cpu, range(24), threadpool="auto")
    assert _where(results)[0] == {os.getpid()}
    assert "cannot be pickled" in spy.measured.pickle_error
    assert spy.mode != "processes"
    _ran_as(_logged(caplog, spy), results)
    if spy.mode == "threads" and "hold the GIL" in caplog.text:  # where processes would have won
        assert "cannot be pickled" in caplog.text


def test_probe_results_are_kept_and_every_item_runs_once(tmp_path, loops_40ms, chooses):
    chooses("processes")
    results = parallel(
        counted, range(30), threadpool="auto", directory=str(tmp_path), loops=loops_40ms
    )
    assert [r[0] for r in results] == [x * x for x in range(30)]
    ran = calls(tmp_path)
    assert sorted(x for x, _ in ran) == list(range(30))  # each item exactly once
    pids = {pid for _, pid in ran}
    assert os.getpid() in pids and len(pids) >= 2  # by the probe here, then by the pool


def test_a_long_first_item_is_handed_over_still_running(tmp_path):
    # Item 0 cannot finish before item 25 has run: the probe must hand it over while it
    # runs, not wait for it, nor run it twice.
    results = parallel(
        waits_for_file, range(40), threadpool="auto", directory=str(tmp_path), target=25
    )
    assert results == list(range(40))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(f"{i}.done" for i in range(40))


def test_initializer_runs_where_items_run(tmp_path, loops_40ms, chooses):
    # The probe's threads run it before their first item; a short input may run entirely
    # in the probe (on a quiet machine it does), and then nothing else runs it.
    results = parallel(
        sleep_where,
        range(3),
        threadpool="auto",
        initializer=note_start,
        initargs=(str(tmp_path),),
        seconds=0.0,
    )
    assert {(pid, thread) for _, pid, thread in results} <= set(inits(tmp_path))
    (tmp_path / "inits").unlink()
    chooses("processes")
    results = parallel(
        cpu_where,
        range(16),
        threadpool="auto",
        initializer=note_start,
        initargs=(str(tmp_path),),
        loops=loops_40ms,
    )
    workers = {pid for _, pid, _ in results} - {os.getpid()}
    assert workers and workers <= {
        pid for pid, _ in inits(tmp_path)
    }  # processes were chosen, and set up


def test_a_handed_over_item_past_item_timeout_fails_alone():
    release = threading.Event()
    try:
        began = time.monotonic()
        results = parallel(
            first_waits,
            range(40),
            threadpool="auto",
            item_timeout=1.0,
            return_exceptions=True,
            release=release,
        )
        assert time.monotonic() - began < 30
    finally:
        release.set()
    assert isinstance(results[0], ItemTimeoutError) and "item 0" in str(results[0])
    assert results[1:] == list(range(1, 40))


def test_a_failure_after_the_hand_over_does_not_wait_for_a_running_probe_item():
    release = threading.Event()
    try:
        with pytest.raises(ValueError, match="bad item 30"):
            parallel(first_waits, range(40), threadpool="auto", release=release, bad=30)
        assert not release.is_set()  # raised while item 0 still waited
    finally:
        release.set()


@pytest.mark.parametrize("return_as", ["generator", "generator_unordered"])
def test_generators(return_as):
    out = parallel(sleep_where, range(100), threadpool="auto", return_as=return_as, seconds=0.01)
    assert not isinstance(out, list)
    xs = [r[0] for r in out]
    assert (
        (xs == list(range(100))) if return_as == "generator" else (sorted(xs) == list(range(100)))
    )


def test_input_is_read_lazily():
    read = []

    def numbers():
        for i in range(100_000):
            read.append(i)
            yield i

    out = parallel(sleep_where, numbers(), threadpool="auto", return_as="generator", seconds=0.01)
    assert [next(out)[0] for _ in range(3)] == [0, 1, 2]
    assert len(read) < 300, len(read)  # the probe read what it ran, the pool a bounded window
    out.close()


def test_errors_in_the_probe_name_their_item():
    results = parallel(fails_on, range(30), threadpool="auto", return_exceptions=True, bad=(1, 20))
    assert [type(r) for r in results].count(ValueError) == 2
    assert isinstance(results[1], ValueError) and isinstance(results[20], ValueError)
    assert any("item 1" in note for note in results[1].__notes__)
    assert [r for i, r in enumerate(results) if i not in (1, 20)] == [
        i for i in range(30) if i not in (1, 20)
    ]
    with pytest.raises(ValueError, match="bad item 1") as caught:
        parallel(fails_on, range(30), threadpool="auto", bad=(1,))
    assert any("item 1" in note for note in caught.value.__notes__)


def test_an_error_that_ends_the_call_starts_no_pool(caplog, chooses):
    caplog.set_level(logging.DEBUG, logger="fastparallel")
    fastparallel.shutdown()  # no idle process pool: one would have to start
    chooses("processes")  # what the model would say for the rest: the error ends the call first
    with pytest.raises(ZeroDivisionError):
        parallel(cpu_divide, range(16), threadpool="auto", loops=0)
    assert "auto: serial — item 0 raised ZeroDivisionError" in caplog.text
    assert "started worker process" not in caplog.text


def test_retries_and_item_timeout_apply_to_the_probe(tmp_path):
    from resilience_helpers import attempts, flaky, stuck_first

    results = parallel(
        flaky, range(12), threadpool="auto", retries=1, directory=str(tmp_path), fail={2: 1}
    )
    assert results == [x * x for x in range(12)]
    assert len(attempts(tmp_path, 2)) == 2
    (tmp_path / "t").mkdir()
    release = threading.Event()  # item 1 waits on it: it runs on a thread of this process
    try:
        results = parallel(
            stuck_first,
            range(8),
            threadpool="auto",
            item_timeout=2.0,  # a busy machine makes the other items slow, never that slow
            return_exceptions=True,
            directory=str(tmp_path / "t"),
            target=1,
            event=release,
        )
    finally:
        release.set()
    assert isinstance(results[1], ItemTimeoutError)
    assert [r for i, r in enumerate(results) if i != 1] == [x * x for x in range(8) if x != 1]


def test_the_choice_is_in_the_progress_text(capfd):
    parallel(sleep_where, range(200), threadpool="auto", progress=True, seconds=0.01)
    err = capfd.readouterr().err
    assert "(auto: threads — " in err  # a log file's plain progress lines


def test_n_workers_applies_to_the_chosen_mode(caplog, loops_40ms):
    caplog.set_level(logging.INFO, logger="fastparallel")
    results = parallel(cpu_where, range(16), threadpool="auto", n_workers=1, loops=loops_40ms)
    # One worker process cannot beat this thread: serial, and one probe thread (n_workers=1).
    assert _chosen(caplog) == "serial"
    assert _where(results)[0] == {os.getpid()} and len(_where(results)[1]) == 2
    caplog.clear()
    results = parallel(sleep_where, range(3), threadpool="auto", n_workers=0, seconds=0)
    assert _where(results)[1] == {threading.get_ident()}  # n_workers=0: serially, nothing measured
    assert "n_workers=0" in caplog.text


def test_process_only_options_are_accepted():
    assert [
        r[0]
        for r in parallel(
            sleep_where,
            range(6),
            threadpool="auto",
            method="spawn",
            max_tasks_per_child=2,
            seconds=0.01,
        )
    ] == list(range(6))


def test_what_cannot_take_part_is_refused_before_anything_runs():
    async def double(x):
        return 2 * x

    def never(x):
        raise AssertionError("ran")

    with ThreadPoolExecutor(1) as executor, pytest.raises(ValueError, match="executor"):
        parallel(never, [1], threadpool="auto", executor=executor)
    with pytest.raises(ValueError, match="pause"):
        parallel(never, [1], threadpool="auto", pause=0.1)
    with pytest.raises(ValueError, match="coroutine"):
        parallel(double, [1], threadpool="auto")
    with pytest.raises(TypeError, match='"auto"'):
        parallel(never, [1], threadpool="yes")


def test_a_short_input_that_ran_within_the_probe_starts_nothing_else(caplog):
    caplog.set_level(logging.DEBUG, logger="fastparallel")
    results = parallel(sleep_where, range(3), threadpool="auto", seconds=0.0)
    assert [r[0] for r in results] == [0, 1, 2]
    if "auto: all 3 items ran while measuring them" in caplog.text:  # on a quiet machine
        threads = _where(results)[1]
        assert threading.get_ident() not in threads and len(threads) <= 2  # the probe's threads
        assert "started worker process" not in caplog.text


def _auto_messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith("auto: ")]


def test_a_later_call_like_an_earlier_one_starts_in_the_chosen_mode(caplog, loops_40ms, chooses):
    caplog.set_level(logging.INFO, logger="fastparallel")
    chooses("processes")
    parallel(cpu_where, range(24), threadpool="auto", loops=loops_40ms)
    assert _auto_messages(caplog)[0].startswith("auto: processes")
    caplog.clear()
    chooses("serial")  # not asked again: the later call measures nothing
    # No probe this time: every item runs in a worker process, none in this one.
    results = parallel(cpu_where, range(6), threadpool="auto", loops=loops_40ms)
    assert [r[0] for r in results] == list(range(6))
    assert os.getpid() not in {r[1] for r in results}
    [message] = _auto_messages(caplog)
    assert message.startswith("auto: processes, as measured on an earlier call of this function")


def test_a_loop_of_small_batches_measures_once_and_runs_the_rest_where_it_chose(caplog):
    """Each batch is short enough to run whole while measuring (on a quiet machine); the
    first decides where the others go, and they go there at once. Which mode that is
    depends on the machine's load; test_model checks that a quiet 2-CPU machine gets
    processes for this work."""
    caplog.set_level(logging.INFO, logger="fastparallel")
    loops = loops_for(0.002)
    parallel(cpu_where, range(64), threadpool="auto", loops=loops)
    for batch in range(3):
        caplog.clear()
        results = parallel(cpu_where, range(64), threadpool="auto", loops=loops)
        assert [r[0] for r in results] == list(range(64))
        [message] = _auto_messages(caplog)
        assert message.startswith("auto: ") and ", as measured on an earlier call" in message, (
            message
        )
        mode = message.split()[1].rstrip(",")
        pids, threads = _where(results)
        if mode == "processes":  # nothing ran in this process: no probe
            assert os.getpid() not in pids, batch
        elif mode == "threads":
            assert pids == {os.getpid()} and threading.get_ident() not in threads, batch
        else:
            assert mode == "serial" and (pids, threads) == (
                {os.getpid()},
                {threading.get_ident()},
            ), batch


def test_other_arguments_or_shutdown_measure_again(caplog, loops_40ms):
    caplog.set_level(logging.INFO, logger="fastparallel")
    parallel(cpu_where, range(24), threadpool="auto", loops=loops_40ms)
    caplog.clear()
    # Same function, other arguments: it may behave otherwise, so it is measured again.
    results = parallel(cpu_where, range(20_000), threadpool="auto", loops=1)
    assert len(results) == 20_000
    assert "as measured" not in _auto_messages(caplog)[0]
    caplog.clear()
    fastparallel.shutdown()
    parallel(cpu_where, range(24), threadpool="auto", loops=loops_40ms)
    assert "as measured" not in _auto_messages(caplog)[0]


def test_a_call_that_ran_whole_while_measuring_is_remembered_for_warm_workers(caplog, monkeypatch):
    from fastparallel.auto import choose as auto
    from fastparallel.auto.costs import WARM_START

    starts = []
    real = auto.recommend

    def spy(m, n_items, workers):
        starts.append(m.start_seconds)
        return real(m, n_items, workers)

    monkeypatch.setattr(auto, "recommend", spy)
    caplog.set_level(logging.INFO, logger="fastparallel")
    fastparallel.shutdown()  # no idle pool from another test: this call's estimate is a cold start
    assert parallel(abs, range(-5, 5), threadpool="auto") == [abs(x) for x in range(-5, 5)]
    assert starts[0] > WARM_START, starts
    # On a quiet machine the ten items run while measuring (test_model checks the same
    # logic with injected measurements): the call's own prediction, then the one
    # remembered for the next call like it, with the workers this call would leave warm.
    if "all 10 items ran while measuring them" in caplog.text:
        assert len(starts) == 2 and starts[1] == WARM_START, starts
