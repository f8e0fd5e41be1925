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

Meanwhile the calling thread samples the GIL (:class:`.gil.GilSampler`). A batch still
running when the time is up is not waited for: its outcome arrives later through
:meth:`Probe.late`. A batch starts only if expected to end in time.
"""

from __future__ import annotations

import itertools
import queue
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

from fastparallel.auto.gil import GilSampler, StarvedClock
from fastparallel.backends.base import Chunk, Crashed, Done, Outcome, wait_and_drain
from fastparallel.backends.runner import Call, run_chunk
from fastparallel.backends.slots import NO_ITEM, read_slot
from fastparallel.errors import item_error, item_timeout_error

__all__ = ["Probe", "Sample"]

SOLO_SHARE = 0.4  # the share of the probe's time in which items run alone
BATCH_SECONDS = 0.002  # shorter items run in batches of about this long
MAX_BATCH = 4096
KEPT = 32  # items and results kept to time their pickling
WARM_SPAN = 0.01  # measurements after the first batch count once they span this long
WAITING_BATCHES = 1  # batches alone, after the first, that show items wait (with settle)
WAITING_SHARE = 0.15  # waiting: thread and process on a CPU less than this share of the time
_ABANDONED = "it ran on a thread that measured the first items; that thread was abandoned"


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


class _Runner:
    """One probe thread and what the caller may read of it."""

    __slots__ = ("abandoned", "began", "chunk", "index", "slot")

    def __init__(self, index: int):
        self.index = index
        self.chunk: Chunk | None = None  # the batch it runs
        self.began = 0.0
        self.slot = [NO_ITEM, 0]  # item_timeout: the running item's index and start (monotonic_ns)
        self.abandoned = False  # its batch's outcome is dropped


class Probe:
    """Runs ``call`` on the first items, on ``threads`` daemon threads (``settle``: see 1.)."""

    def __init__(
        self,
        call: Call,
        items: Iterator[Any],
        *,
        threads: int,
        stop_on_error: bool,
        item_timeout: float | None = None,
        initializer: Callable[..., Any] | None = None,
        initargs: tuple[Any, ...] = (),
        settle: bool = False,
    ):
        self._call, self._items, self._settle = call, items, settle
        self._stop_on_error, self._item_timeout = stop_on_error, item_timeout
        self._init = (initializer, initargs)
        self._lock = threading.Condition()
        self._runners = [_Runner(i) for i in range(max(1, threads))]
        self._batch, self.next_id = 1, 0  # next_id: the next free chunk id
        self._paired = self._stopping = self._handed_off = False
        self._begin = self._end = self._solo_end = 0.0
        # Batches run alone: items, wall time, thread CPU time, time waiting for a CPU.
        self._solo: list[tuple[int, float, float, float]] = []
        self._estimate = 0.0  # seconds per item in the last batch run alone
        self._solo_cores = 0.0
        self._cpu_begin = 0.0
        self._after_first: tuple[float, float] | None = (
            None  # process CPU time and time after the first batch
        )
        self._baseline = 0.0  # cores the process kept busy before the probe (other threads)
        # Batches run two at once, per thread: items, the first one's start, the last one's
        # end, time waiting for a CPU; each thread's rate over its span, summed: the pair's.
        self._pair: list[list[float]] = [[0, 0.0, 0.0, 0.0] for _ in self._runners]
        self._late: queue.SimpleQueue[Outcome] = queue.SimpleQueue()
        self.read = 0
        self.exhausted = False
        self.input_error: Exception | None = None
        self.init_error: BaseException | None = None
        self.finished: list[Outcome] = []
        self.running: list[Chunk] = []  # batches still running when the probe stopped
        self.kept: list[tuple[Any, Any]] = []  # (item, result) of the first successful items

    # -- the caller's side -----------------------------------------------------------------
    def run(self, seconds: float, deadline: float | None = None) -> Sample:
        """Probe for ``seconds`` at most (and not past ``deadline``); the caller's thread
        samples the GIL meanwhile. Batches still running then go on (:attr:`running`)."""
        sampler = GilSampler()
        self._baseline = sampler.calibrate()
        self._begin = now = time.monotonic()
        self._end = now + seconds if deadline is None else min(now + seconds, deadline)
        self._solo_end = now + SOLO_SHARE * (self._end - now)
        self._cpu_begin = time.process_time()
        for runner in self._runners:
            threading.Thread(
                target=self._work,
                args=(runner,),
                daemon=True,
                name=f"fastparallel-probe-{runner.index}",
            ).start()
        try:
            while self._going():
                if sampler.enabled:
                    sampler.nap(2 if self._paired else min(1, len(self._solo)))
                else:
                    with self._lock:
                        self._lock.wait(0.005)
                self._expire_during_run(time.monotonic())
        except BaseException:
            self.abandon()
            raise
        finally:
            sampler.starved.close()
        return self._hand_off(sampler)

    def _going(self) -> bool:
        """Whether to go on sampling: until the time is up, or the threads have stopped and
        no batch runs any more."""
        with self._lock:
            if time.monotonic() >= self._end:
                return False
            return not self._stopping or any(
                r.chunk is not None and not r.abandoned for r in self._runners
            )

    def _hand_off(self, sampler: GilSampler) -> Sample:
        with self._lock:
            now = time.monotonic()
            if not self._paired:
                self._solo_cores = self._cores(now)
            self._stopping = self._handed_off = True
            self.running = [
                r.chunk for r in self._runners if r.chunk is not None and not r.abandoned
            ]
            longest = max(
                (now - r.began for r in self._runners if r.chunk is not None and not r.abandoned),
                default=0.0,
            )
            self._lock.notify_all()
            return self._sample(sampler, longest)

    def _sample(self, sampler: GilSampler, longest: float) -> Sample:
        """The measurements; the time threads waited for a CPU held by other programs is
        taken out of the shares (thread CPU, cores, overlap), not out of the item times."""
        solo = self._solo
        first = solo[0][1] / solo[0][0] if solo else 0.0
        typical = solo[1:] or solo  # the first batch may have paid one-time costs
        # Per-item times from the largest batches only: in the first, smaller ones of tiny
        # items, reading the clocks weighs as much as the items.
        largest = max(b[0] for b in typical) if typical else 0
        seconds = [wall / n for n, wall, _, _ in typical if n == largest]
        wall = sum(b[1] for b in typical)
        running = sum(b[1] - b[3] for b in typical)  # on a CPU, or waiting for anything but a CPU
        thread_cpu = min(1.0, sum(b[2] for b in typical) / running) if running > 0 else 0.0
        cores = self._solo_cores / max(0.25, running / wall) if wall > 0 else self._solo_cores
        overlap = None
        rates = [
            n / (end - start - starved)
            for n, start, end, starved in self._pair
            if n and end - start > starved
        ]
        if seconds and len(rates) == 2:
            overlap = sum(rates) * running / sum(b[0] for b in typical)
        finished = sum(len(o.values) for o in self.finished if isinstance(o, Done))
        gil = sampler.share(1) if sampler.total[1] > WARM_SPAN else sampler.share(0)
        return Sample(
            finished,
            self.read,
            seconds,
            thread_cpu,
            max(thread_cpu, cores),
            gil,
            overlap,
            longest,
            first,
        )

    def late(self, timeout: float | None) -> list[Outcome]:
        """Outcomes of :attr:`running` batches that ended, waiting up to ``timeout`` for one."""
        return wait_and_drain(self._late, timeout)

    @property
    def pending(self) -> bool:
        """Whether a batch that was running at the hand-off has not reported yet."""
        with self._lock:
            return any(r.chunk is not None and not r.abandoned for r in self._runners)

    def abandon(self) -> None:
        """Start nothing more; batches still running end in their threads (a batch is one
        item, or a few milliseconds of them), their results dropped."""
        with self._lock:
            self._stopping = self._handed_off = True
            for runner in self._runners:
                runner.abandoned = True
            self._lock.notify_all()

    # -- item_timeout ----------------------------------------------------------------------
    def deadline(self) -> float | None:
        """With ``item_timeout``: when the earliest running item becomes overdue."""
        limit = self._item_timeout
        if limit is None:
            return None
        now = time.monotonic()
        with self._lock:
            started = [
                read_slot(r.slot, now)[1]
                for r in self._runners
                if r.chunk is not None and not r.abandoned
            ]
        return min(started) + limit if started else None

    def overdue(self, now: float) -> list[Outcome]:
        """Abandon the threads whose item ran past ``item_timeout``; their items fail."""
        limit = self._item_timeout
        outcomes: list[Outcome] = []
        if limit is None:
            return outcomes
        with self._lock:
            for runner in self._runners:
                chunk = runner.chunk
                if chunk is None or runner.abandoned:
                    continue
                index, started = read_slot(runner.slot, now)
                if index >= 0 and now >= started + limit:  # batches hold one item with item_timeout
                    runner.abandoned = True
                    error = item_timeout_error(chunk.start, chunk.items[0], limit, _ABANDONED)
                    outcomes.append(Crashed(chunk, 0, error))
        return outcomes

    def _expire_during_run(self, now: float) -> None:
        overdue = self.overdue(now)
        if overdue:
            with self._lock:
                self.finished.extend(overdue)
                self._stopping = True  # an item that hangs says enough

    # -- the probe threads -----------------------------------------------------------------
    def _work(self, runner: _Runner) -> None:
        initializer, initargs = self._init
        if initializer is not None:
            try:
                initializer(*initargs)
            except BaseException as exc:
                with self._lock:
                    self.init_error = self.init_error or exc
                    self._stopped()
                return
        timed = self._item_timeout is not None
        starved = StarvedClock()
        try:
            while True:
                taken = self._take(runner)
                if taken is None:
                    return
                chunk, solo = taken
                wall, cpu, waited = time.perf_counter(), time.thread_time(), starved()
                run = run_chunk(
                    self._call,
                    chunk.items,
                    chunk.start,
                    self._stop_on_error,
                    current_item=runner.slot if timed else None,
                    timed=timed,
                )
                times = (
                    time.perf_counter() - wall,
                    time.thread_time() - cpu,
                    starved() - waited,
                    run.seconds,
                )
                self._finish(runner, chunk, run.values, run.errors, times, solo)
        finally:
            starved.close()

    def _take(self, runner: _Runner) -> tuple[Chunk, bool] | None:
        """The next batch for ``runner`` and whether it runs alone, or None: stop."""
        with self._lock:
            while runner.index > 0 and not self._paired and not self._stopping:
                self._lock.wait()
            now = time.monotonic()
            if self._stopping or self.exhausted or runner.abandoned or self._waits(now):
                return self._stopped()
            late = bool(self._solo) and now + self._batch * self._estimate > self._end
            # The first call often pays one-time costs (imports, caches): one more item
            # alone, even one expected to end late, tells whether the first was typical.
            second = len(self._solo) == 1 and not self._paired and runner.index == 0
            if late and not second:
                return self._stopped()  # it would not end in time
            if (
                not self._paired
                and self._solo
                and now >= self._solo_end
                and len(self._runners) > 1
                and not (late and second)
            ):
                self._start_pair(now)
            try:
                items = list(itertools.islice(self._items, self._batch))
            except Exception as exc:
                self.input_error = exc
                return self._stopped()
            self.exhausted = len(items) < self._batch
            if not items:
                return self._stopped()
            chunk = Chunk(self.next_id, self.read, items)
            self.next_id += 1
            self.read += len(items)
            runner.chunk, runner.began = chunk, now
            return chunk, not self._paired

    def _waits(self, now: float) -> bool:
        """With ``settle``: whether batches alone, the first aside, show items that wait."""
        typical = self._solo[1:]
        if not self._settle or self._paired or len(typical) < WAITING_BATCHES:
            return False
        busy = sum(b[2] for b in typical) / max(sum(b[1] for b in typical), 1e-9)
        return busy < WAITING_SHARE and self._cores(now) < WAITING_SHARE

    def _stopped(self) -> tuple[Chunk, bool] | None:
        """A thread that stops taking items ends the probe for every thread (under the lock)."""
        self._stopping = True
        self._lock.notify_all()
        return None

    def _start_pair(self, now: float) -> None:
        self._solo_cores = self._cores(now)
        self._paired = True
        self._lock.notify_all()

    def _cores(self, now: float) -> float:
        """The process's CPU seconds per second while items ran alone (after the first
        batch, if later ones ran a while), beyond what it used before the probe (a
        library's threads that still spin after earlier work, say)."""
        cpu, began = self._cpu_begin, self._begin
        if self._after_first is not None and now - self._after_first[1] > WARM_SPAN:
            cpu, began = self._after_first
        return (time.process_time() - cpu) / max(now - began, 1e-9) - self._baseline

    def _finish(
        self,
        runner: _Runner,
        chunk: Chunk,
        values: list[Any],
        errors: list[tuple[int, BaseException]],
        times: tuple[float, float, float, float],
        solo: bool,
    ) -> None:
        wall, cpu, waited, seconds = times
        errors = [(o, item_error(e, chunk.start + o, chunk.items[o])) for o, e in errors]
        outcome = Done(chunk, values, errors, seconds)
        with self._lock:
            runner.chunk, runner_began = None, runner.began
            if runner.abandoned:
                return  # reported as timed out, or given up on
            if self._handed_off:
                self._late.put(outcome)
            else:
                self.finished.append(outcome)
            failed = {o for o, _ in errors}
            ok = ((chunk.items[o], v) for o, v in enumerate(values) if o not in failed)
            self.kept += itertools.islice(ok, max(0, KEPT - len(self.kept)))
            if solo and values:
                self._solo.append((len(values), wall, cpu, waited))
                self._estimate = wall / len(values)
                if len(self._solo) == 1:
                    self._after_first = (time.process_time(), time.monotonic())
                if wall < BATCH_SECONDS and self._item_timeout is None:
                    self._batch = min(MAX_BATCH, 2 * self._batch)
            elif values:
                n, began, _, starved = self._pair[runner.index]
                self._pair[runner.index] = [
                    n + len(values),
                    began or runner_began,
                    time.monotonic(),
                    starved + waited,
                ]
            if errors and self._stop_on_error:
                self._stopping = True
            self._lock.notify_all()  # the caller may be waiting for the last batch
