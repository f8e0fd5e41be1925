"""The cost model (predictions, the recommended mode) and the probe, in isolation."""

from __future__ import annotations

import itertools
import math
import threading
import time
from dataclasses import replace

import pytest

from fastparallel.auto.explain import (
    Summary,
    Verdict,
    Why,
    reasons,
    seconds_text,
    summary_text,
    verdict,
)
from fastparallel.auto.model import (
    EXAMPLE,
    MARGIN,
    Kind,
    Measurements,
    PickleCost,
    recommend,
)
from fastparallel.auto.probe import Probe
from fastparallel.backends.base import Done
from fastparallel.backends.runner import Call
from fastparallel.core.chunking import ChunkReader

pytestmark = pytest.mark.unit

WORKERS = {"serial": 1, "threads": 6, "processes": 2}
SMALL = PickleCost(8, 1e-7, 1e-7)


def _m(**changes) -> Measurements:
    """Pure-Python items of 40 ms on 2 CPUs, with small items and results."""
    return replace(EXAMPLE, **changes)


def _said(chosen: Verdict) -> str:
    return summary_text(Summary(Why.MEASURED, chosen.mode, chosen))


def test_pure_python_goes_to_processes():
    mode, predicted = recommend(_m(overlap=0.9), 100, WORKERS)
    assert mode == "processes"
    assert predicted["serial"] == pytest.approx(4.0, rel=0.01)
    assert predicted["threads"] >= predicted["serial"]  # the GIL lets one thread run at a time
    assert predicted["processes"] == pytest.approx(2.05, rel=0.05)  # Amdahl: start + work / 2


def test_waiting_goes_to_threads_and_more_threads_than_cpus_help():
    m = _m(thread_cpu=0.01, cores=0.01, gil=0.01, overlap=2.0)
    mode, predicted = recommend(m, 100, WORKERS)
    assert mode == "threads"
    assert predicted["threads"] == pytest.approx(4.0 / 6, rel=0.05)


def test_code_that_releases_the_gil_goes_to_threads_unless_a_library_already_uses_the_cores():
    m = _m(
        gil=0.02,
        overlap=1.95,
        item=PickleCost(8_000_000, 0.005, 0.003),
        result=PickleCost(8_000_000, 0.005, 0.003),
    )
    assert recommend(m, 100, WORKERS)[0] == "threads"
    # A BLAS keeping both cores busy: two threads did not overlap, nothing runs faster.
    assert recommend(replace(m, cores=1.97, overlap=0.95), 100, WORKERS)[0] == "serial"
    assert recommend(replace(m, cores=1.0, overlap=0.95), 100, WORKERS)[0] == "serial"


def test_tiny_items_stay_serial():
    m = _m(seconds_per_item=7e-8, item=PickleCost(2, 2e-8, 2e-8), result=PickleCost(2, 2e-8, 2e-8))
    mode, predicted = recommend(m, 5_000_000, WORKERS)
    assert mode == "serial"
    assert (
        predicted["processes"] > predicted["serial"] and predicted["threads"] >= predicted["serial"]
    )
    chosen = verdict(m, mode, predicted)
    assert chosen.no_pool_sooner and chosen.processes_out is None
    assert "no pool is predicted to finish sooner" in _said(chosen)


def test_a_call_that_cannot_be_pickled_goes_to_threads_and_says_why():
    m = _m(
        pickle_error="fn, its arguments or its keyword arguments cannot be pickled (TypeError: lock)"
    )
    mode, predicted = recommend(m, 100, WORKERS)
    assert mode == "threads" and math.isinf(predicted["processes"])
    chosen = verdict(m, mode, predicted)
    assert chosen.processes_out == m.pickle_error and chosen.behaviour.kind is Kind.HOLDS_GIL
    assert "processes are out" in _said(chosen)
    assert any("cannot be pickled" in r for r in reasons(m, mode, predicted, 100, WORKERS))
    # Tiny items stay serial all the same: processes would not have won.
    assert recommend(replace(m, seconds_per_item=1e-7), 100, WORKERS)[0] == "serial"


def test_free_threaded_python_keeps_cpu_work_on_threads():
    m = _m(gil=0.0, overlap=1.98, free_threaded=True)
    mode, predicted = recommend(m, 100, WORKERS)
    assert mode == "threads"
    assert verdict(m, mode, predicted).behaviour.kind is Kind.NO_GIL
    assert "without a GIL" in _said(verdict(m, mode, predicted))


def test_the_simpler_mode_wins_within_the_margin():
    predicted = {"serial": 1.0, "threads": 0.5, "processes": 0.5 * (1 - MARGIN) + 0.01}
    from fastparallel.auto.model import _simplest_best

    assert _simplest_best(predicted) == "threads"
    assert (
        _simplest_best({"serial": 1.0, "threads": 1 - MARGIN + 0.01, "processes": 2.0}) == "serial"
    )
    assert _simplest_best({"serial": 1.0, "threads": 0.95, "processes": 0.5}) == "processes"


def test_one_cpu_never_recommends_processes_for_cpu_work():
    assert recommend(_m(cpus=1, overlap=None), 100, WORKERS)[0] == "serial"


def test_seconds_text():
    assert seconds_text(0.04) == "40 ms"
    assert seconds_text(0.0042) == "4.20 ms"
    assert seconds_text(7e-8) == "0.07 µs"
    assert seconds_text(1.234) == "1.23 s"
    assert seconds_text(math.inf) == "cannot run"


# -- the probe -------------------------------------------------------------------------------


def _slow(x: int, release: threading.Event) -> int:
    if x == 0:
        release.wait(30)
    return x


def test_the_probe_never_waits_for_a_long_item_nor_starts_another():
    release = threading.Event()
    read = []
    items = (read.append(i) or i for i in range(100))
    probe = Probe(
        Call(_slow, (), {"release": release}), ChunkReader(items), threads=2, stop_on_error=True
    )
    began = time.monotonic()
    try:
        sample = probe.run(0.2)
        assert time.monotonic() - began < 10  # not the 30 s item 0 waits
        assert read == [0] and [c.items for c in probe.running] == [
            [0]
        ]  # one item read, still running
        assert sample.finished == 0 and sample.running >= 0.19
    finally:
        release.set()
    outcomes = probe.late(10)
    assert isinstance(outcomes[0], Done) and outcomes[0].values == [0]


def test_the_probe_keeps_every_result_once_and_reads_only_what_it_runs():
    read = []
    items = (read.append(i) or i for i in itertools.count())
    probe = Probe(
        Call(time.sleep, (), {}), ChunkReader(0.002 for _ in items), threads=2, stop_on_error=True
    )
    sample = probe.run(0.1)
    done = [o for o in probe.finished if isinstance(o, Done)]
    starts = sorted(o.chunk.start for o in done) + sorted(c.start for c in probe.running)
    assert sorted(starts) == list(range(len(starts)))  # every item read ran, in one batch each
    assert len(read) == probe.read == sample.read


def _hangs_on_one(x: int, release: threading.Event) -> int:
    if x == 1:
        release.wait(30)
    return x


def test_an_item_past_item_timeout_fails_in_the_probe():
    release = threading.Event()
    probe = Probe(
        Call(_hangs_on_one, (), {"release": release}),
        ChunkReader(iter(range(50))),
        threads=1,
        stop_on_error=False,
        item_timeout=0.1,
    )
    try:
        probe.run(0.5)
    finally:
        release.set()
    crashed = [o for o in probe.finished if not isinstance(o, Done)]
    assert len(crashed) == 1 and crashed[0].chunk.start == 1
    assert "item_timeout" in str(crashed[0].error)


def _burn(x: int) -> int:
    total, end = 0, time.thread_time() + 0.01
    while time.thread_time() < end:
        total += 1
    return x


@pytest.mark.parametrize("settle", [True, False])
def test_with_settle_the_probe_ends_once_items_are_seen_to_wait(settle):
    probe = Probe(
        Call(time.sleep, (), {}),
        ChunkReader(0.03 for _ in range(100)),
        threads=2,
        stop_on_error=True,
        settle=settle,
    )
    began = time.monotonic()
    sample = probe.run(1.0)
    spent = time.monotonic() - began
    if settle:  # two items alone (the first, then one more) showed the thread off the CPU
        assert sample.read == 2 and sample.overlap is None and spent < 0.9, (sample, spent)
    else:  # it measures both phases, for its whole time
        assert sample.read > 10 and sample.overlap is not None and spent >= 0.95, (sample, spent)


def test_with_settle_the_probe_goes_on_for_items_that_compute():
    probe = Probe(
        Call(_burn, (), {}),
        ChunkReader(iter(range(1000))),
        threads=2,
        stop_on_error=True,
        settle=True,
    )
    sample = probe.run(1.0)
    assert sample.read > 2, sample  # past the two items alone where settle would have stopped


def test_a_call_that_ran_whole_while_measuring_is_remembered_with_warm_workers():
    """auto remembers, for a call that ran whole in the probe, the mode that wins for the
    same call with the workers it would leave warm: 64 pure-Python items of 2 ms stay
    serial while starting processes costs 100 ms, and go to processes once they are warm."""
    from fastparallel.auto.costs import WARM_START

    small = _m(seconds_per_item=0.002, start_seconds=0.1)
    assert recommend(small, 64, WORKERS)[0] == "serial"
    assert recommend(replace(small, start_seconds=WARM_START), 64, WORKERS)[0] == "processes"


def test_items_too_short_to_release_the_gil_are_taken_to_hold_it():
    """Under a couple of microseconds an item cannot hand the GIL over and back to any
    effect: a low GIL share or two threads seeming to overlap are noise, not a reason to
    choose threads (seen once on a busy machine: 0.11 µs items, "two threads 1.4x")."""
    from fastparallel.auto.choose import measure
    from fastparallel.auto.gil import gil_enabled
    from fastparallel.auto.probe import Sample

    def sample(seconds: float) -> Sample:
        return Sample(
            finished=4096,
            read=4096,
            seconds=[seconds] * 4,
            thread_cpu=1.0,
            cores=1.0,
            gil=0.2,
            overlap=1.4,
            running=0.0,
            first=seconds,
        )

    call, kept = Call(abs, (), {}), [(-1, 1)]
    tiny = measure(call, kept, sample(1.1e-7), processes=2, idle_pool=False)
    longer = measure(call, kept, sample(1e-4), processes=2, idle_pool=False)
    if gil_enabled():
        assert (tiny.gil, tiny.overlap) == (1.0, 1.0)
        assert recommend(tiny, 6_000_000, WORKERS)[0] == "serial"
    assert (longer.gil, longer.overlap) == (0.2, 1.4)  # long enough: measured as it was


def test_the_chooser_remembers_for_a_call_that_ran_whole_the_mode_with_warm_workers():
    """With injected measurements (no threads, no clocks): 64 pure-Python items of 2 ms
    that all ran while measuring stay serial for this call, and a later call like it is
    to start on the processes this call's choice would have left warm."""
    from types import SimpleNamespace

    from fastparallel.auto import choose
    from fastparallel.auto.costs import WARM_START

    small = _m(seconds_per_item=0.002, start_seconds=0.1)
    probe = SimpleNamespace(read=64, exhausted=True, running=[], finished=[])
    options = SimpleNamespace(total=None, stop_chunk_on_error=True)
    key = ("test", "ran whole")
    try:
        summary = choose._summarize(small, probe, options, WORKERS, key)
        assert summary.why is Why.RAN_WHOLE and summary.items == 64
        remembered = choose._recall(key)
        assert remembered is not None and remembered.mode == "processes"
        assert recommend(replace(small, start_seconds=WARM_START), 64, WORKERS)[0] == "processes"
        # More to come: the mode for the rest is chosen, and remembered as it is.
        probe.exhausted = False
        summary = choose._summarize(small, probe, options, WORKERS, key)
        assert summary.why is Why.MEASURED and summary.verdict == choose._recall(key)
    finally:
        choose.forget()
