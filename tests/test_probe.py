"""The probe's arithmetic and its hand-over, without threads or clocks: injected batches
(:func:`summarize`, :func:`items_wait`, :func:`pair_due`), injected naps (the GIL
sampler's accounting), and a fake probe beside a fake backend (:class:`HandedOver`)."""

from __future__ import annotations

import queue
from dataclasses import replace

import pytest

from fastparallel.auto import gil
from fastparallel.auto.handover import HandedOver
from fastparallel.auto.model import EXAMPLE, Kind, classify
from fastparallel.auto.probe import (
    BATCH_SECONDS,
    Batch,
    CpuMark,
    cores_busy,
    items_wait,
    pair_due,
    second_alone,
    summarize,
)
from fastparallel.backends.base import Chunk, Done, Started

pytestmark = [pytest.mark.unit, pytest.mark.timeout(30)]


def _alone(wall: float, items: int = 1, cpu: float | None = None, starved: float = 0.0, at=0.0):
    cpu = wall if cpu is None else cpu
    return Batch(0, True, items, wall, cpu, starved, at, at + wall)


def _pair(thread: int, began: float, wall: float, items: int = 1, starved: float = 0.0):
    return Batch(thread, False, items, wall, wall, starved, began, began + wall)


def _computing(seconds: float, pair_wall: float) -> list[Batch]:
    """A first batch of twice the time, three alone, then two threads of two batches each."""
    batches = [_alone(2 * seconds)] + [
        _alone(seconds, at=2 * seconds + i * seconds) for i in range(3)
    ]
    start = 5 * seconds
    batches += [_pair(t, start + i * pair_wall, pair_wall) for t in (0, 1) for i in range(2)]
    return batches


def test_the_first_batch_is_left_out_and_the_largest_batches_give_the_time():
    batches = [
        _alone(0.001),
        _alone(0.0008, items=2),
        _alone(0.0016, items=4),
        _alone(0.0016, items=4),
    ]
    sample = summarize(batches, cores=1.0, gil=0.9, finished=11, read=11, running=0.0)
    assert sample.seconds == [0.0004, 0.0004]  # the 4-item batches, not the 2-item one
    assert sample.first == 0.001 and sample.overlap is None  # never two at once
    assert (sample.finished, sample.read, sample.gil) == (11, 11, 0.9)


def test_two_threads_that_keep_pace_overlap_twice_and_ones_that_take_turns_once():
    free = summarize(_computing(0.04, 0.04), cores=1.0, gil=0.0, finished=9, read=9, running=0.0)
    turns = summarize(_computing(0.04, 0.08), cores=1.0, gil=0.98, finished=9, read=9, running=0.0)
    assert free.overlap == pytest.approx(2.0) and turns.overlap == pytest.approx(1.0)
    assert free.seconds == pytest.approx([0.04] * 3) and free.thread_cpu == pytest.approx(1.0)


def test_the_gaps_between_a_threads_batches_are_the_probes_not_the_items():
    # Each thread waited 20 ms for its next batch (the calling thread was slow to hand it
    # over on a busy machine): the items themselves ran at full speed on both.
    batches = _computing(0.01, 0.01)[:4]
    batches += [_pair(t, 0.05 + i * 0.03, 0.01) for t in (0, 1) for i in range(3)]
    sample = summarize(batches, cores=1.0, gil=0.0, finished=10, read=10, running=0.0)
    assert sample.overlap == pytest.approx(2.0)


def test_time_waiting_for_a_cpu_is_taken_out_of_the_shares_not_the_item_times():
    # Half of each batch alone the thread waited for a CPU held by another program.
    batches = [_alone(0.02), *(_alone(0.02, cpu=0.01, starved=0.01) for _ in range(3))]
    sample = summarize(batches, cores=0.5, gil=0.9, finished=4, read=4, running=0.0)
    assert sample.seconds == pytest.approx([0.02] * 3)  # as the items took
    assert sample.thread_cpu == pytest.approx(1.0)  # on a CPU whenever it could be
    assert sample.cores == pytest.approx(1.0)  # 0.5 core over half the time


def test_items_that_wait_and_nothing_finished():
    waits = [_alone(0.03, cpu=0.0001) for _ in range(2)]
    sample = summarize(waits, cores=0.01, gil=0.0, finished=2, read=2, running=0.0)
    assert sample.thread_cpu < 0.01 and sample.cores < 0.05
    empty = summarize([], cores=0.0, gil=0.0, finished=0, read=1, running=0.5)
    assert (empty.seconds, empty.overlap, empty.running, empty.first) == ([], None, 0.5, 0.0)


def test_items_wait_needs_one_batch_alone_after_the_first():
    slept = _alone(0.03, cpu=0.0001)
    assert not items_wait([slept], cores=0.0)
    assert items_wait([slept, slept], cores=0.01)
    assert not items_wait([slept, slept], cores=0.5)  # the process computed meanwhile
    assert not items_wait([slept, _alone(0.03)], cores=0.01)  # the second computed
    assert not items_wait([slept, _pair(0, 0.0, 0.03)], cores=0.0)  # only batches alone count
    # On a busy machine: on a CPU 2 ms of 30, but it waited 27 ms for one: it computes.
    starved = _alone(0.03, cpu=0.002, starved=0.027)
    assert not items_wait([slept, starved], cores=0.05)
    assert second_alone([starved], sampling_gil=True) and not second_alone([starved], False)


def test_pair_due():
    computed, slept, tiny = _alone(0.06), _alone(0.03, cpu=0.0), _alone(BATCH_SECONDS / 4)
    assert not pair_due([], now=1.0, solo_end=0.0, sampling_gil=True)
    # The GIL sampled: alone until solo_end, whatever items do.
    assert not pair_due([computed], now=0.06, solo_end=0.08, sampling_gil=True)
    assert pair_due([computed], now=0.08, solo_end=0.08, sampling_gil=True)
    # No GIL: as soon as a batch long enough to time showed items computing...
    assert pair_due([computed], now=0.06, solo_end=0.08, sampling_gil=False)
    assert not pair_due([tiny], now=0.001, solo_end=0.08, sampling_gil=False)
    # ...and a second batch alone first for items that wait (settle may end the probe there).
    assert not pair_due([slept], now=0.03, solo_end=0.08, sampling_gil=False)
    assert pair_due([slept, slept], now=0.06, solo_end=0.08, sampling_gil=False)


def test_a_second_batch_alone_unless_no_gil_and_items_compute():
    computed, slept = _alone(0.06), _alone(0.03, cpu=0.0)
    assert second_alone([computed], sampling_gil=True)
    assert not second_alone([computed], sampling_gil=False)  # a CPU would idle meanwhile
    assert second_alone([slept], sampling_gil=False)  # settle may end the probe on it
    assert not second_alone([computed, computed], sampling_gil=True)


def test_cores_busy():
    assert cores_busy(CpuMark(0.0, 0.0), CpuMark(2.0, 1.0), baseline=0.0) == pytest.approx(2.0)
    assert cores_busy(CpuMark(1.0, 5.0), CpuMark(1.5, 6.0), baseline=0.5) == pytest.approx(0.0)


def test_the_kinds_of_item():
    assert classify(EXAMPLE) is Kind.HOLDS_GIL
    assert classify(replace(EXAMPLE, free_threaded=True, gil=0.0)) is Kind.NO_GIL
    assert classify(replace(EXAMPLE, cores=0.05, gil=0.01)) is Kind.WAITS
    assert classify(replace(EXAMPLE, gil=0.02, overlap=1.95)) is Kind.RELEASES_GIL
    assert classify(replace(EXAMPLE, gil=0.02, cores=1.9, overlap=1.0)) is Kind.LIBRARY
    assert classify(replace(EXAMPLE, gil=0.02, overlap=1.1)) is Kind.SHARED


# -- the GIL sampler's accounting, with injected naps ---------------------------------------


def test_a_late_nap_counts_as_held_an_early_wake_not_at_all(monkeypatch):
    sampler = gil.GilSampler()
    sampler.enabled = True
    sampler.late_after = 0.001
    naps = iter(
        [
            gil._Nap([], 0.0005, 0.0),  # on time: the GIL was free
            gil._Nap([], 0.006, 0.0055),  # late: held
            gil._Nap(["report"], 0.0002, 0.0),  # woken by a report: no sample
        ]
    )
    monkeypatch.setattr(sampler, "_nap", lambda inbox: next(naps))
    inbox: queue.SimpleQueue[str] = queue.SimpleQueue()
    assert sampler.wait(inbox, 1) == [] and sampler.wait(inbox, 1) == []
    assert sampler.wait(inbox, 1) == ["report"]
    assert sampler.total[1] == pytest.approx(0.0065) and sampler.held[1] == pytest.approx(0.006)
    assert sampler.share(1) == pytest.approx(0.006 / 0.0065)
    sampler.enabled = False  # a free-threaded build: no GIL to hold
    assert sampler.share(1) == 0.0


# -- the hand-over, with a fake probe and a fake backend ------------------------------------


class FakeProbe:
    """What HandedOver reads of a probe: finished outcomes, running chunks, late ones."""

    def __init__(self, finished, running):
        self.finished = finished
        self.running = running
        self.late_outcomes: list = []
        self.waited: list = []
        self.overdue_outcomes: list = []
        self.abandoned = False

    def late(self, timeout):
        self.waited.append(timeout)
        out, self.late_outcomes = self.late_outcomes, []
        return out

    def deadline(self):
        return 5.0 if self.running else None

    def overdue(self, now):
        out, self.overdue_outcomes = self.overdue_outcomes, []
        return out

    def abandon(self):
        self.abandoned = True


class FakeBackend:
    chunks_per_worker = 2
    reports_starts = False
    runs_on_poll = False

    def __init__(self):
        self.submitted: list[Chunk] = []
        self.polled: list = []
        self.aborted = False

    def submit(self, chunk):
        self.submitted.append(chunk)

    def poll(self, timeout):
        self.polled.append(timeout)
        done = [Done(c, c.items, [], 0.0) for c in self.submitted]
        self.submitted = []
        return [Started(done[0].chunk, 0.0), *done] if done else []

    def item_deadline(self):
        return 9.0

    def expire(self, now):
        return []

    def abort(self):
        self.aborted = True


def _done(chunk: Chunk) -> Done:
    return Done(chunk, chunk.items, [], 0.0)


def test_the_probes_chunks_are_not_run_again_and_their_outcomes_come_in_order():
    a, b, c = Chunk(0, 0, [0]), Chunk(1, 1, [1, 2]), Chunk(2, 3, [3])
    probe, inner = FakeProbe([_done(a), _done(b)], [c]), FakeBackend()
    handed = HandedOver(inner, probe)
    for chunk in (a, b, c):
        handed.submit(chunk)
    assert inner.submitted == []  # none of them runs again
    assert handed.poll(None) == [_done(a), _done(b)]  # at once: they had finished
    assert handed.item_deadline() == 5.0  # the probe's running item; the backend holds nothing
    probe.waited.clear()
    assert handed.poll(7.0) == [] and probe.waited == [0.0, 7.0]  # then blocked on the probe
    probe.late_outcomes = [_done(c)]
    assert handed.poll(7.0) == [_done(c)]
    assert inner.polled == []  # never polled with nothing in flight


def test_the_backend_is_waited_on_while_it_holds_chunks_and_the_probe_drained_after():
    running, fresh = Chunk(0, 0, [0]), Chunk(1, 1, [1])
    probe, inner = FakeProbe([], [running]), FakeBackend()
    handed = HandedOver(inner, probe)
    handed.submit(running)
    handed.submit(fresh)
    assert inner.submitted == [fresh]
    probe.late_outcomes = [_done(running)]
    outcomes = handed.poll(3.0)
    assert inner.polled == [0.0]  # the probe's outcome was ready: no waiting on the backend
    assert outcomes[0] == _done(running) and _done(fresh) in outcomes
    assert handed.poll(3.0) == [] and inner.polled == [0.0]  # nothing left anywhere: no wait


def test_a_late_outcome_for_a_chunk_not_yet_submitted_waits_for_its_submission():
    first, second = Chunk(0, 0, [0]), Chunk(1, 1, [1])
    probe, inner = FakeProbe([], [first, second]), FakeBackend()
    handed = HandedOver(inner, probe)
    handed.submit(first)
    probe.late_outcomes = [_done(second)]
    assert handed.poll(1.0) == []
    handed.submit(second)
    assert handed.poll(1.0) == [_done(second)]


def test_expire_and_abort_reach_the_probe():
    hung = Chunk(0, 0, [0])
    probe, inner = FakeProbe([], [hung]), FakeBackend()
    handed = HandedOver(inner, probe)
    handed.submit(hung)
    crashed = Done(hung, [], [], 0.0)._replace(values=["stand-in for Crashed"])
    probe.overdue_outcomes = [crashed]
    assert handed.expire(10.0) == [crashed]
    handed.abort()
    assert probe.abandoned and not inner.aborted  # the backend held nothing
