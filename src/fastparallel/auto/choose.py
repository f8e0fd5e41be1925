"""``threadpool="auto"``: measure the first items, choose serial, threads or processes, hand over.

:func:`choose` runs the :class:`~.probe.Probe` for a fraction of a second, asks the cost
model (:mod:`.model`) which mode finishes the rest soonest, logs the choice and its
reason, and returns a :class:`Handoff` for :func:`.dispatch.run`: the options of the
chosen mode, the probe's outcomes (the dispatcher handles them like any others, so
their results are kept, their errors fail fast or take their slot, and they are retried
as usual), the batches still running on probe threads, and where the input resumes.
Until those batches end, the chosen backend is wrapped (:class:`WithProbe`) so that the
dispatcher waits for them too.

:func:`measure` turns a probe's sample into the model's :class:`~.model.Measurements`;
:func:`fastparallel.advise` uses it too, so that the two agree.
"""

from __future__ import annotations

import statistics
import threading
from collections import OrderedDict
from collections.abc import Hashable, Iterator
from dataclasses import dataclass, replace
from typing import Any

from fastparallel import logs
from fastparallel.auto.costs import (
    ROUND_TRIP,
    THREAD_ROUND_TRIP,
    WARM_START,
    estimate_start,
    measure_pickling,
)
from fastparallel.auto.explain import behaviour, headline
from fastparallel.auto.gil import gil_enabled
from fastparallel.auto.model import UNKNOWN_ITEMS, Measurements, recommend
from fastparallel.auto.probe import Probe, Sample
from fastparallel.backends.base import Backend, Chunk, Crashed, Done, Measured, Outcome, Started
from fastparallel.backends.runner import Call
from fastparallel.cpus import default_workers, num_cpus
from fastparallel.errors import initializer_error
from fastparallel.options import Mode, Options

__all__ = ["AUTO_SECONDS", "Handoff", "WithProbe", "choose", "forget", "measure", "workers_for"]


AUTO_SECONDS = 0.2  # how long threadpool="auto" measures before it chooses
_SLICE = 0.02  # while probe batches still run, the chosen backend is polled this often
WARM_UP_NOTED = 0.005  # a first item longer than twice the others by this much paid one-time costs
# Handing the GIL over and back costs about a microsecond: an item shorter than this cannot
# release it to any effect, and what the sampler or two threads seem to show of it is noise.
HOLDS_GIL_BELOW = 0.000002
REMEMBERED = 128  # choices kept for later calls of the same function

# Choices made for earlier calls, by what makes a call alike (see _call_key): a loop that
# calls parallel() once per batch measures on its first batch only, and later batches
# start at once in the chosen mode. shutdown() forgets them.
_choices: OrderedDict[Hashable, tuple[Mode, str]] = OrderedDict()
_choices_lock = threading.Lock()


def workers_for(n_workers: int | None) -> dict[Mode, int]:
    """Workers per mode for ``n_workers=`` (None: each mode's default)."""
    return {
        "serial": 1,
        "threads": default_workers(True) if n_workers is None else n_workers,
        "processes": default_workers(False) if n_workers is None else n_workers,
    }


def measure(
    call: Call, probe: Probe, sample: Sample, processes: int, idle_pool: bool
) -> Measurements:
    """The model's measurements from a probe's ``sample``; starting ``processes`` worker
    processes (``idle_pool``: an idle pool is ready) and round trips are estimated
    (advise() replaces them with measured ones)."""
    seconds = sample.seconds
    finished = bool(seconds)
    per_item = statistics.median(seconds) if finished else sample.running
    spread = (
        statistics.pstdev(seconds) / statistics.fmean(seconds)
        if len(seconds) > 1 and per_item > 0
        else 0.0
    )
    warm_up = (
        sample.first - per_item if finished and sample.first > 2 * per_item + WARM_UP_NOTED else 0.0
    )
    call_cost, item_cost, result_cost, pickle_error = measure_pickling(call, probe.kept)
    cpus = num_cpus()
    start, source = estimate_start(processes, cpus, idle_pool)
    cpu_tiny = finished and per_item < HOLDS_GIL_BELOW and sample.thread_cpu > 0.5 and gil_enabled()
    return Measurements(
        seconds_per_item=per_item,
        spread=spread,
        sampled=sample.finished,
        read=sample.read,
        finished=finished,
        thread_cpu=sample.thread_cpu,
        cores=sample.cores,
        gil=1.0 if cpu_tiny else sample.gil,
        overlap=min(1.0, sample.overlap)
        if cpu_tiny and sample.overlap is not None
        else sample.overlap,
        call=call_cost,
        item=item_cost,
        result=result_cost,
        pickle_error=pickle_error,
        warm_up=warm_up,
        start_seconds=start,
        start_source=source,
        round_trip=ROUND_TRIP,
        thread_round_trip=THREAD_ROUND_TRIP,
        cpus=cpus,
        free_threaded=not gil_enabled(),
    )


@dataclass
class Handoff:
    """What :func:`choose` hands to the dispatcher."""

    options: Options  # of the chosen mode
    finished: list[Outcome]  # the probe's outcomes, to handle first
    running: list[Chunk]  # batches still running on probe threads
    read: int  # items taken from the input so far
    next_id: int  # the next free chunk id
    rest: Iterator[Any]  # the input from there on
    summary: str  # the choice and its reason, for the log and the progress bar
    probe: Probe | None

    def wrap(self, backend: Backend) -> Backend:
        """``backend``, or a wrapper that also waits for the probe's running batches."""
        if self.probe is None or not self.running:
            return backend
        # WithProbe copies the wrapped backend's class-level constants onto itself.
        return WithProbe(backend, self.probe)  # type: ignore[return-value]


def choose(
    call: Call, items: Iterator[Any], options: Options, deadline: float | None, idle_pool: bool
) -> Handoff:
    """Probe the first items, choose a mode for the rest, log it: the :class:`Handoff`.
    ``idle_pool``: an idle process pool is ready (starting one costs nothing)."""
    if options.n_workers == 0:
        logs.info("auto: serial — n_workers=0")
        return Handoff(
            options.decided("serial"), [], [], 0, 0, items, "auto: serial — n_workers=0", None
        )
    key = _call_key(call, options)
    remembered = _recall(key)
    if remembered is not None:
        mode, reason = remembered
        summary = f"auto: {mode}, as measured on an earlier call of this function — {reason}"
        logs.info("%s", summary)
        return Handoff(options.decided(mode), [], [], 0, 0, items, summary, None)
    threads = 1 if num_cpus() == 1 or options.n_workers == 1 else 2
    probe = Probe(
        call,
        items,
        threads=threads,
        stop_on_error=options.stop_chunk_on_error,
        item_timeout=options.item_timeout,
        initializer=options.initializer,
        initargs=tuple(options.initargs),
        settle=True,
    )
    sample = probe.run(AUTO_SECONDS, deadline)
    if probe.init_error is not None:
        probe.abandon()
        raise initializer_error(probe.init_error, "a thread that measured the first items")
    workers = workers_for(options.n_workers)
    m = measure(call, probe, sample, workers["processes"], idle_pool)
    if options.total is not None:
        remaining = max(0, options.total - probe.read)
    else:
        remaining = 0 if probe.exhausted else UNKNOWN_ITEMS
    mode, predicted = recommend(m, remaining, workers)
    failed = _final_error(probe.finished) if options.stop_chunk_on_error else None
    if failed is not None:  # the call ends with it: start no pool
        mode, summary = "serial", f"auto: serial — {failed} while measuring; that ends the call"
    elif remaining or probe.running:
        chosen = headline(m, mode, predicted)
        summary = "auto: " + chosen
        _remember(key, mode, chosen.split(" — ", 1)[-1])
    else:  # nothing left to choose for; a later call like this one gets the mode it would win in
        summary = f"auto: all {probe.read} items ran while measuring them; {behaviour(m)}"
        # ...with the workers a first call would have left warm
        again, predicted = recommend(
            replace(m, start_seconds=WARM_START), max(probe.read, 1), workers
        )
        _remember(key, again, headline(m, again, predicted).split(" — ", 1)[-1])
    logs.info("%s", summary)
    rest = items if probe.input_error is None else _raising(probe.input_error)
    return Handoff(
        options.decided(mode),
        probe.finished,
        probe.running,
        probe.read,
        probe.next_id,
        rest,
        summary,
        probe,
    )


def _call_key(call: Call, options: Options) -> Hashable:
    """What makes two calls alike: the function's code (a lambda written in a loop is a new
    object each time, with the same code), the same objects as arguments (small numbers
    and strings by value), and the same ``n_workers``."""
    fn = call.fn
    while hasattr(fn, "func") and hasattr(fn, "args"):  # functools.partial
        fn = fn.func
    code = getattr(fn, "__code__", None)
    name = getattr(fn, "__qualname__", None) or type(fn).__qualname__
    what = (name, code) if code is not None else (name, id(fn))
    values = (*call.args, *call.kwargs.items())
    return what, tuple(_value_key(v) for v in values), options.n_workers


def _value_key(value: Any) -> Hashable:
    if isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], str):  # a keyword
        return value[0], _value_key(value[1])
    if value is None or isinstance(value, (bool, int, float, complex)):
        return value
    if isinstance(value, (str, bytes)) and len(value) <= 256:
        return value
    return type(value).__qualname__, id(value)


def _recall(key: Hashable) -> tuple[Mode, str] | None:
    with _choices_lock:
        choice = _choices.get(key)
        if choice is not None:
            _choices.move_to_end(key)
        return choice


def _remember(key: Hashable, mode: Mode, reason: str) -> None:
    with _choices_lock:
        _choices[key] = (mode, reason)
        _choices.move_to_end(key)
        while len(_choices) > REMEMBERED:
            _choices.popitem(last=False)


def forget() -> None:
    """Forget the choices made for earlier calls (:func:`fastparallel.shutdown` does)."""
    with _choices_lock:
        _choices.clear()


def _final_error(outcomes: list[Outcome]) -> str | None:
    """``"item 3 raised ValueError"`` for the first failed item, if any."""
    for outcome in outcomes:
        if isinstance(outcome, Done) and outcome.errors:
            offset, error = outcome.errors[0]
            return f"item {outcome.chunk.start + offset} raised {type(error).__name__}"
        if isinstance(outcome, Crashed):
            return f"item {outcome.chunk.start} raised {type(outcome.error).__name__}"
    return None


def _raising(error: Exception) -> Iterator[Any]:
    """The input from where it raised ``error`` while the probe read it: raises it again,
    so that the dispatcher reports it as it reports any input error."""
    raise error
    yield  # pragma: no cover - makes this a generator


class WithProbe:
    """The chosen backend, plus the probe's batches still running when it handed over.

    Their outcomes come from the probe; everything else goes to the backend, which is
    only polled while it holds chunks of its own.
    """

    def __init__(self, inner: Backend, probe: Probe):
        self.inner = inner
        self.probe = probe
        self.chunks_per_worker = inner.chunks_per_worker
        self.reports_starts = inner.reports_starts
        self._mine: set[int] = set()  # ids of chunks submitted to ``inner`` and not over

    def begin(self, call: Call, n_workers: int, options: Options) -> Measured | None:
        return self.inner.begin(call, n_workers, options)

    def submit(self, chunk: Chunk) -> None:
        self._mine.add(chunk.id)
        self.inner.submit(chunk)

    def _track(self, outcomes: list[Outcome]) -> list[Outcome]:
        for outcome in outcomes:
            if not isinstance(outcome, Started):
                self._mine.discard(outcome.chunk.id)
        return outcomes

    def poll(self, timeout: float | None) -> list[Outcome]:
        outcomes = self.probe.late(0)
        if self._mine:
            if outcomes:
                wait: float | None = 0.0
            elif self.probe.pending:
                wait = _SLICE if timeout is None else min(timeout, _SLICE)
            else:
                wait = timeout
            outcomes += self._track(self.inner.poll(wait))
        elif not outcomes and self.probe.pending:
            outcomes = self.probe.late(timeout)
        return outcomes

    def item_deadline(self) -> float | None:
        deadlines = [self.probe.deadline(), self.inner.item_deadline() if self._mine else None]
        return min((d for d in deadlines if d is not None), default=None)

    def expire(self, now: float) -> list[Outcome]:
        outcomes = self.probe.overdue(now)
        if self._mine:
            outcomes += self._track(self.inner.expire(now))
        return outcomes

    def abort(self) -> None:
        self.probe.abandon()
        if self._mine:
            self.inner.abort()

    def end(self) -> None:
        self.inner.end()
