"""The probe: run the first items on one or two threads of this process, and measure them.

:func:`fastparallel.advise` and ``threadpool="auto"`` both start here. The probe reads
the input one batch at a time, only when a thread is about to run it, for a bounded
time, and keeps every result, as the outcomes the dispatcher handles (``Done``, and
``Crashed`` for an item that ran past ``item_timeout``):

1. **Alone**: one thread runs batches (one item, doubling while shorter than
   ``BATCH_SECONDS``), timing each batch's wall and thread CPU time; the process's CPU
   time says how many cores an item keeps busy (a library's threads included). With
   ``settle``, items seen to wait (off the CPU) end the probe here: threads will run them.
2. **Two at once**, when there is more than one CPU: does the pair get further?

The calling thread decides everything: it reads the input, hands each probe thread its
next batch through the thread's own queue, and waits for the threads' reports on one
queue, sampling the GIL meanwhile (:class:`.gil.GilSampler`). The probe threads share
nothing with it but those queues and their current-item slots. What the reports say
is kept as plain records (:class:`Batch`, :class:`CpuMark`), and :func:`summarize`, a
pure function, turns them into the :class:`Sample` the cost model reads.

A batch still running when the time is up is not waited for: its outcome arrives later
through :meth:`Probe.late`. A batch starts only if expected to end in time.
"""

from __future__ import annotations

import itertools
import queue
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from fastparallel.auto.gil import GilSampler, StarvedClock
from fastparallel.backends.base import Chunk, Crashed, Done, Outcome, wait_and_drain
from fastparallel.backends.runner import Call, run_chunk
from fastparallel.backends.slots import NO_ITEM, is_overdue, next_deadline, running_item
from fastparallel.core.chunking import ChunkReader
from fastparallel.errors import item_error, item_timeout_error

__all__ = [
    "Batch",
    "CpuMark",
    "Probe",
    "Sample",
    "cores_busy",
    "items_wait",
    "pair_due",
    "second_alone",
    "summarize",
]

SOLO_SHARE = 0.4  # the share of the probe's time in which items run alone
BATCH_SECONDS = 0.002  # shorter items run in batches of about this long
MAX_BATCH = 4096
KEPT = 32  # items and results kept to time their pickling
WARM_SPAN = 0.01  # measurements after the first batch count once they span this long
WAITING_BATCHES = 1  # batches alone, after the first, that show items wait (with settle)
WAITING_SHARE = 0.15  # waiting: thread and process on a CPU less than this share of the time
_ABANDONED = "it ran on a thread that measured the first items; that thread was abandoned"


class Batch(NamedTuple):
    """One batch a probe thread ran, as its clocks saw it."""

    thread: int  # which probe thread: 0, or 1 once two run at once
    alone: bool  # it ran before the second thread started
    items: int  # items that returned a value
    wall: float  # seconds it took
    cpu: float  # seconds its thread was on a CPU
    starved: float  # seconds its thread waited for a CPU held by other programs
    began: float  # time.monotonic() when it started
    ended: float  # time.monotonic() when it ended


class CpuMark(NamedTuple):
    """The process's CPU seconds (``time.process_time()``) at ``at`` (``time.monotonic()``)."""

    cpu: float
    at: float

    @classmethod
    def now(cls) -> CpuMark:
        return cls(time.process_time(), time.monotonic())


class Sample(NamedTuple):
    """What the probe measured: ``seconds``, the wall time per item of the largest batches
    run alone; ``thread_cpu``, the share of it their thread was on a CPU; ``cores``, the
    process's CPU time over it (about 1 computing, 0 waiting, more with a library's
    threads); ``gil``, the share of it the GIL was held; ``overlap``, items per second on
    two threads over one (None: not measured); ``running``, the longest unfinished item's
    time so far; ``first``, per item of the first batch (one-time costs: left out)."""

    finished: int
    read: int
    seconds: list[float]
    thread_cpu: float
    cores: float
    gil: float
    overlap: float | None
    running: float
    first: float


def cores_busy(start: CpuMark, end: CpuMark, baseline: float) -> float:
    """The process's CPU seconds per second from ``start`` to ``end``, beyond the
    ``baseline`` it used before the probe (a library's threads still spinning, say).

    Example:
        >>> round(cores_busy(CpuMark(1.0, 10.0), CpuMark(1.9, 11.0), baseline=0.1), 3)
        0.8
    """
    return (end.cpu - start.cpu) / max(end.at - start.at, 1e-9) - baseline


def items_wait(batches: Sequence[Batch], cores: float) -> bool:
    """With ``settle``: whether the batches run alone, the first aside, show items that
    wait (their thread and the process on a CPU less than ``WAITING_SHARE`` of the time,
    the time the thread waited for a CPU aside).

    Example:
        >>> slept = Batch(0, True, 1, wall=0.03, cpu=0.0001, starved=0, began=0, ended=0.03)
        >>> items_wait([slept, slept], cores=0.01), items_wait([slept], cores=0.01)
        (True, False)
    """
    typical = [b for b in batches if b.alone][1:]
    if len(typical) < WAITING_BATCHES:
        return False
    # Time spent waiting for a CPU held by other programs is not the item's waiting.
    busy = sum(b.cpu for b in typical) / max(sum(b.wall - b.starved for b in typical), 1e-9)
    return busy < WAITING_SHARE and cores < WAITING_SHARE


def pair_due(alone: Sequence[Batch], now: float, solo_end: float, sampling_gil: bool) -> bool:
    """Whether the second thread starts now, after the batches run ``alone``.

    Where the GIL is sampled, items run alone until ``solo_end``, so that the sampler
    sees them hold it or not. Without a GIL (a free-threaded build) there is nothing to
    sample, and every moment alone leaves a CPU idle: the pair starts as soon as one
    batch alone was long enough to time (``BATCH_SECONDS``) and showed items that
    compute; items that wait get a second batch alone first (``settle`` may end the
    probe on it: threads run them anyway).

    Example:
        >>> computed = Batch(0, True, 1, wall=0.06, cpu=0.06, starved=0, began=0, ended=0.06)
        >>> pair_due([computed], now=0.06, solo_end=0.08, sampling_gil=True)
        False
        >>> pair_due([computed], now=0.06, solo_end=0.08, sampling_gil=False)
        True
    """
    if not alone:
        return False
    if sampling_gil:
        return now >= solo_end
    last = alone[-1]
    computes = len(alone) > 1 or _computes(last)
    return now >= solo_end or (last.wall >= BATCH_SECONDS and computes)


def second_alone(alone: Sequence[Batch], sampling_gil: bool) -> bool:
    """Whether one more batch runs alone after the first even if expected to end late:
    the first often pays one-time costs (imports, caches), and a second tells whether
    it was typical. Without a GIL, items seen to compute skip it: a CPU would idle
    meanwhile, and whatever the first paid, threads run them on every CPU.

    Example:
        >>> computed = Batch(0, True, 1, wall=0.06, cpu=0.06, starved=0, began=0, ended=0.06)
        >>> second_alone([computed], sampling_gil=True), second_alone([computed], sampling_gil=False)
        (True, False)
    """
    return len(alone) == 1 and (sampling_gil or not _computes(alone[0]))


def _computes(batch: Batch) -> bool:
    """Whether the batch's thread was on a CPU a fair share of the time it could be."""
    return batch.cpu >= WAITING_SHARE * (batch.wall - batch.starved)


def _overlap(batches: Sequence[Batch], per_item_alone: float) -> float | None:
    """Items per second of the two threads together over one thread's alone (None:
    both did not run). Each thread's rate is over the time its batches ran, the time
    it waited for a CPU taken out; not over the gaps between them, which are the probe's
    (a thread waits for the calling thread to hand it its next batch)."""
    rates = []
    for thread in (0, 1):
        mine = [b for b in batches if not b.alone and b.thread == thread and b.items]
        running = sum(b.wall - b.starved for b in mine)
        if mine and running > 0:
            rates.append(sum(b.items for b in mine) / running)
    return sum(rates) * per_item_alone if len(rates) == 2 and per_item_alone > 0 else None


def summarize(
    batches: Sequence[Batch], cores: float, gil: float, *, finished: int, read: int, running: float
) -> Sample:
    """The :class:`Sample` that ``batches`` show; ``cores``: the process's cores busy
    while items ran alone (:func:`cores_busy`), ``gil``: the share of the time it was
    held. The time threads waited for a CPU held by other programs is taken out of the
    shares (thread CPU, cores, overlap), not out of the item times.

    Example:
        >>> alone = [Batch(0, True, 1, 0.05, 0.05, 0, 0.0, 0.05)] + [
        ...     Batch(0, True, 1, 0.04, 0.04, 0, 0.05 + 0.04 * i, 0.09 + 0.04 * i) for i in range(3)
        ... ]
        >>> pair = [Batch(t, False, 1, 0.08, 0.04, 0, 0.17 + 0.08 * i, 0.25 + 0.08 * i)
        ...         for t in (0, 1) for i in range(2)]
        >>> s = summarize(alone + pair, cores=1.0, gil=0.98, finished=8, read=8, running=0.0)
        >>> s.seconds, s.thread_cpu, round(s.overlap, 2), s.first
        ([0.04, 0.04, 0.04], 1.0, 1.0, 0.05)
    """
    solo = [b for b in batches if b.alone and b.items]
    first = solo[0].wall / solo[0].items if solo else 0.0
    typical = solo[1:] or solo  # the first batch may have paid one-time costs
    # Per-item times from the largest batches only: in the first, smaller ones of tiny
    # items, reading the clocks weighs as much as the items.
    largest = max((b.items for b in typical), default=0)
    seconds = [b.wall / b.items for b in typical if b.items == largest]
    wall = sum(b.wall for b in typical)
    on_cpu_or_waiting = sum(b.wall - b.starved for b in typical)  # for anything but a CPU
    thread_cpu = 0.0
    if on_cpu_or_waiting > 0:
        thread_cpu = min(1.0, sum(b.cpu for b in typical) / on_cpu_or_waiting)
    if wall > 0:
        cores /= max(0.25, on_cpu_or_waiting / wall)
    overlap = None
    if seconds:
        overlap = _overlap(batches, on_cpu_or_waiting / sum(b.items for b in typical))
    return Sample(
        finished=finished,
        read=read,
        seconds=seconds,
        thread_cpu=thread_cpu,
        cores=max(thread_cpu, cores),
        gil=gil,
        overlap=overlap,
        running=running,
        first=first,
    )


class _Task(NamedTuple):
    """A batch for a probe thread, and whether it runs alone."""

    chunk: Chunk
    alone: bool


class _Report(NamedTuple):
    """What a probe thread tells: its batch's outcome and clocks, or (``outcome`` None)
    that its initializer raised ``error``."""

    thread: int
    outcome: Done | None
    batch: Batch | None
    error: BaseException | None = None


class _Clock(NamedTuple):
    """When the probe began, when it must end, when two threads start, and the cores the
    process kept busy before it (see :func:`cores_busy`)."""

    began: CpuMark
    end: float
    solo_end: float
    baseline: float


class Probe:
    """Runs ``call`` on the first chunks of ``reader``, on ``threads`` daemon threads
    (``settle``: see 1.). Only the thread that calls :meth:`run` touches its state."""

    def __init__(
        self,
        call: Call,
        reader: ChunkReader,
        *,
        threads: int,
        stop_on_error: bool,
        item_timeout: float | None = None,
        initializer: Callable[..., Any] | None = None,
        initargs: tuple[Any, ...] = (),
        settle: bool = False,
    ):
        self._call, self._reader, self._settle = call, reader, settle
        self._stop_on_error, self._item_timeout = stop_on_error, item_timeout
        self._init = (initializer, tuple(initargs))
        count = max(1, threads)
        self._inboxes: list[queue.SimpleQueue[_Task | None]] = [
            queue.SimpleQueue() for _ in range(count)
        ]
        self._slots = [[NO_ITEM, 0] for _ in range(count)]  # item_timeout: see backends.slots
        self._outbox: queue.SimpleQueue[_Report] = queue.SimpleQueue()
        self._running: dict[int, Chunk] = {}  # by thread: the batch it runs
        self._given: dict[int, float] = {}  # by thread: when it was given that batch
        self._size = 1  # items in the next batch
        self._paired = False
        self._stopping = False
        self._clock = _Clock(CpuMark(0.0, 0.0), 0.0, 0.0, 0.0)
        self._after_first: CpuMark | None = None
        self._cores_alone = 0.0
        self._sampling = True  # the GIL is sampled (not on a free-threaded build)
        self.batches: list[Batch] = []
        self.finished: list[Outcome] = []  # outcomes of the batches that ended, in order
        self.kept: list[tuple[Any, Any]] = []  # (item, result) of the first successful items
        self.input_error: Exception | None = None
        self.init_error: BaseException | None = None

    @property
    def read(self) -> int:
        return self._reader.read

    @property
    def exhausted(self) -> bool:
        return self._reader.exhausted

    @property
    def running(self) -> list[Chunk]:
        """The batches still running (after :meth:`run`: handed over, not waited for)."""
        return list(self._running.values())

    # -- the caller's side -----------------------------------------------------------------
    def run(self, seconds: float, deadline: float | None = None) -> Sample:
        """Probe for ``seconds`` at most (and not past ``deadline``); the caller's thread
        samples the GIL meanwhile. Batches still running then go on (:attr:`running`)."""
        sampler = GilSampler()
        self._sampling = sampler.enabled
        baseline = sampler.calibrate()
        # The time to measure counts from when the threads run: on a busy machine a new
        # thread may wait a good part of a second for its first turn on a CPU.
        for index in range(len(self._inboxes)):
            threading.Thread(
                target=self._work, args=(index,), daemon=True, name=f"fastparallel-probe-{index}"
            ).start()
        now = time.monotonic()
        end = now + seconds if deadline is None else min(now + seconds, deadline)
        self._clock = _Clock(CpuMark.now(), end, now + SOLO_SHARE * (end - now), baseline)
        try:
            self._next(0, now)
            while self._running and time.monotonic() < end:
                for report in self._wait(sampler):
                    self._receive(report, time.monotonic())
                self._expire_during_run(time.monotonic())
        except BaseException:
            self.abandon()
            raise
        finally:
            sampler.starved.close()
        return self._hand_off(sampler)

    def _wait(self, sampler: GilSampler) -> list[_Report]:
        """Reports, waiting a nap at a time while sampling the GIL, else until the end
        (or the next item deadline)."""
        if sampler.enabled:
            phase = 2 if self._paired else min(1, len(self.batches))
            return sampler.wait(self._outbox, phase)
        until = self._clock.end
        limit = self.deadline()
        if limit is not None:
            until = min(until, limit)
        return wait_and_drain(self._outbox, max(0.0, until - time.monotonic()))

    def _hand_off(self, sampler: GilSampler) -> Sample:
        now = time.monotonic()
        if not self._paired:
            self._cores_alone = self._cores(now)
        self._stop()
        longest = max((now - self._given[t] for t in self._running), default=0.0)
        gil = sampler.share(1) if sampler.total[1] > WARM_SPAN else sampler.share(0)
        finished = sum(len(o.values) for o in self.finished if isinstance(o, Done))
        return summarize(
            self.batches,
            self._cores_alone,
            gil,
            finished=finished,
            read=self.read,
            running=longest,
        )

    def late(self, timeout: float | None) -> list[Outcome]:
        """Outcomes of :attr:`running` batches that ended, waiting up to ``timeout`` for one."""
        outcomes: list[Outcome] = []
        for report in wait_and_drain(self._outbox, timeout):
            outcome = report.outcome
            if outcome is not None and self._running.get(report.thread) is outcome.chunk:
                del self._running[report.thread]
                outcomes.append(outcome)
        return outcomes

    def abandon(self) -> None:
        """Start nothing more; batches still running end in their threads (a batch is one
        item, or a few milliseconds of them), their results dropped."""
        self._stop()
        self._running.clear()

    def _stop(self) -> None:
        """No batch starts any more: each thread ends once its batch is over."""
        if not self._stopping:
            self._stopping = True
            for inbox in self._inboxes:
                inbox.put(None)

    # -- item_timeout ----------------------------------------------------------------------
    def _running_items(self, now: float) -> list[Any]:
        return [running_item(self._slots[t], c, now) for t, c in self._running.items()]

    def deadline(self) -> float | None:
        """With ``item_timeout``: when the earliest running item becomes overdue."""
        if self._item_timeout is None or not self._running:
            return None
        now = time.monotonic()
        return next_deadline(self._running_items(now), self._item_timeout, now)

    def overdue(self, now: float) -> list[Outcome]:
        """Abandon the threads whose item ran past ``item_timeout``; their items fail."""
        outcomes: list[Outcome] = []
        limit = self._item_timeout
        if limit is None:
            return outcomes
        for thread, chunk in list(self._running.items()):
            item = running_item(self._slots[thread], chunk, now)
            if is_overdue(item, limit, now):  # batches hold one item with item_timeout
                del self._running[thread]
                error = item_timeout_error(chunk.start, chunk.items[0], limit, _ABANDONED)
                outcomes.append(Crashed(chunk, 0, error))
        return outcomes

    def _expire_during_run(self, now: float) -> None:
        overdue = self.overdue(now)
        if overdue:
            self.finished.extend(overdue)
            self._stop()  # an item that hangs says enough

    # -- deciding what runs next (in the caller's thread) ----------------------------------
    def _receive(self, report: _Report, now: float) -> None:
        if report.outcome is None:  # the initializer raised
            self.init_error = self.init_error or report.error
            self._running.pop(report.thread, None)
            self._stop()
            return
        chunk = report.outcome.chunk
        if self._running.get(report.thread) is not chunk:
            return  # given up on (item_timeout)
        del self._running[report.thread]
        outcome, batch = report.outcome, report.batch
        assert batch is not None
        self.finished.append(outcome)
        failed = {o for o, _ in outcome.errors}
        ok = ((chunk.items[o], v) for o, v in enumerate(outcome.values) if o not in failed)
        self.kept += itertools.islice(ok, max(0, KEPT - len(self.kept)))
        if outcome.values:
            self.batches.append(batch)
            if batch.alone and len(self.batches) == 1:
                self._after_first = CpuMark.now()
            if batch.alone and batch.wall < BATCH_SECONDS and self._item_timeout is None:
                self._size = min(MAX_BATCH, 2 * self._size)
        if outcome.errors and self._stop_on_error:
            self._stop()
        self._next(report.thread, now)

    def _next(self, thread: int, now: float) -> None:
        """Give ``thread`` its next batch, start the second thread when it is time, or stop."""
        if self._stopping or self.exhausted:
            self._stop()
            return
        alone = [b for b in self.batches if b.alone]
        if self._settle and not self._paired and items_wait(alone, self._cores(now)):
            self._stop()
            return
        estimate = alone[-1].wall / alone[-1].items if alone else 0.0
        late = bool(alone) and now + self._size * estimate > self._clock.end
        second = not self._paired and thread == 0 and second_alone(alone, self._sampling)
        if late and not second:
            self._stop()  # it would not end in time
            return
        solo_end = self._clock.solo_end
        pair = not self._paired and not late and pair_due(alone, now, solo_end, self._sampling)
        if pair and len(self._inboxes) > 1:
            self._cores_alone = self._cores(now)
            self._paired = True
            if self._give(thread, now):
                self._next(1, now)
            return
        if not self._give(thread, now):
            self._stop()

    def _give(self, thread: int, now: float) -> bool:
        """Read the next batch and hand it to ``thread``; False if there is none."""
        try:
            chunk = self._reader.next_chunk(self._size)
        except Exception as exc:
            self.input_error = exc
            return False
        if chunk is None:
            return False
        self._running[thread] = chunk
        self._given[thread] = now
        self._inboxes[thread].put(_Task(chunk, not self._paired))
        return True

    def _cores(self, now: float) -> float:
        """The process's cores busy while items ran alone (after the first batch, if later
        ones ran a while)."""
        start = self._clock.began
        if self._after_first is not None and now - self._after_first.at > WARM_SPAN:
            start = self._after_first
        return cores_busy(start, CpuMark(time.process_time(), now), self._clock.baseline)

    # -- the probe threads -----------------------------------------------------------------
    def _work(self, thread: int) -> None:
        initializer, initargs = self._init
        if initializer is not None:
            try:
                initializer(*initargs)
            except BaseException as exc:
                self._outbox.put(_Report(thread, None, None, exc))
                return
        inbox, slot = self._inboxes[thread], self._slots[thread]
        timed = self._item_timeout is not None
        starved = StarvedClock()
        try:
            while True:
                task = inbox.get()
                if task is None:
                    return
                chunk = task.chunk
                began = time.monotonic()
                wall = time.perf_counter()
                cpu = time.thread_time()
                waited = starved()
                run = run_chunk(
                    self._call,
                    chunk.items,
                    chunk.start,
                    self._stop_on_error,
                    current_item=slot if timed else None,
                    timed=timed,
                )
                batch = Batch(
                    thread=thread,
                    alone=task.alone,
                    items=len(run.values),
                    wall=time.perf_counter() - wall,
                    cpu=time.thread_time() - cpu,
                    starved=starved() - waited,
                    began=began,
                    ended=time.monotonic(),
                )
                errors = [
                    (o, item_error(e, chunk.start + o, chunk.items[o])) for o, e in run.errors
                ]
                self._outbox.put(
                    _Report(thread, Done(chunk, run.values, errors, run.seconds), batch)
                )
        finally:
            starved.close()
