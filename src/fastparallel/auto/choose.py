"""``threadpool="auto"``: measure the first items, choose serial, threads or processes, hand over.

:func:`choose` runs the :class:`~.probe.Probe` on the dispatcher's own input reader for
a fraction of a second, asks the cost model (:mod:`.model`) which mode finishes the rest
soonest, logs the choice and its reason, and returns a :class:`Handoff`: the options of
the chosen mode, the choice as a record (:class:`.explain.Summary`), and the chunks the
probe ran or still runs. The dispatcher submits those first, like any chunk, to the
chosen backend wrapped by :meth:`Handoff.around` (:class:`.handover.HandedOver`), which
returns their outcomes (results kept, errors failing fast or taking their slot, retries
as usual) instead of running them again.

:func:`measure` turns a probe's sample into the model's :class:`~.model.Measurements`;
:func:`fastparallel.advise` uses it too, so that the two agree.
"""

from __future__ import annotations

import statistics
import threading
from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import replace
from typing import Any, NamedTuple

from fastparallel import logs
from fastparallel.auto.costs import (
    ROUND_TRIP,
    THREAD_ROUND_TRIP,
    WARM_START,
    estimate_start,
    measure_pickling,
)
from fastparallel.auto.explain import (
    Behaviour,
    Failure,
    Summary,
    Verdict,
    Why,
    summary_text,
    verdict,
)
from fastparallel.auto.gil import gil_enabled
from fastparallel.auto.handover import HandedOver
from fastparallel.auto.model import UNKNOWN_ITEMS, Measurements, recommend
from fastparallel.auto.probe import Probe, Sample
from fastparallel.backends.base import Backend, Chunk, Crashed, Done, Outcome
from fastparallel.backends.runner import Call
from fastparallel.core.chunking import ChunkReader
from fastparallel.cpus import default_workers, num_cpus
from fastparallel.errors import initializer_error
from fastparallel.options import Mode, Options

__all__ = ["AUTO_SECONDS", "Handoff", "choose", "forget", "measure", "workers_for"]


AUTO_SECONDS = 0.2  # how long threadpool="auto" measures before it chooses
WARM_UP_NOTED = 0.005  # a first item longer than twice the others by this much paid one-time costs
# Handing the GIL over and back costs about a microsecond: an item shorter than this cannot
# release it to any effect, and what the sampler or two threads seem to show of it is noise.
HOLDS_GIL_BELOW = 0.000002
REMEMBERED = 128  # choices kept for later calls of the same function

# Choices made for earlier calls, by what makes a call alike (see _call_key): a loop that
# calls parallel() once per batch measures on its first batch only, and later batches
# start at once in the chosen mode. shutdown() forgets them.
_choices: OrderedDict[Hashable, Verdict] = OrderedDict()
_choices_lock = threading.Lock()


def workers_for(n_workers: int | None) -> dict[Mode, int]:
    """Workers per mode for ``n_workers=`` (None: each mode's default)."""
    return {
        "serial": 1,
        "threads": default_workers(True) if n_workers is None else n_workers,
        "processes": default_workers(False) if n_workers is None else n_workers,
    }


def measure(
    call: Call, kept: list[tuple[Any, Any]], sample: Sample, processes: int, idle_pool: bool
) -> Measurements:
    """The model's measurements from a probe's ``sample`` and the items and results it
    ``kept`` (their pickling is timed); starting ``processes`` worker processes
    (``idle_pool``: an idle pool is ready) and round trips are estimated (advise()
    replaces them with measured ones)."""
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
    call_cost, item_cost, result_cost, pickle_error = measure_pickling(call, kept)
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


class Handoff(NamedTuple):
    """What :func:`choose` hands to the dispatcher: the ``options`` of the chosen mode,
    the choice and its reason (``summary``), and the ``chunks`` the probe ran or still
    runs, to submit first to the backend :meth:`around` wraps."""

    options: Options
    summary: Summary
    chunks: list[Chunk]
    probe: Probe | None = None

    @property
    def note(self) -> str:
        """The choice in words, for the log and the progress bar."""
        return summary_text(self.summary)

    def around(self, backend: Backend) -> Backend:
        """``backend``, or, while the probe has chunks to hand over, ``backend`` with them."""
        if self.probe is None or not self.chunks:
            return backend
        # HandedOver copies the wrapped backend's class-level constants onto itself.
        return HandedOver(backend, self.probe)


def choose(
    call: Call, reader: ChunkReader, options: Options, deadline: float | None, idle_pool: bool
) -> Handoff:
    """Probe the first chunks of ``reader``, choose a mode for the rest, log it: the
    :class:`Handoff`. ``idle_pool``: an idle process pool is ready (starting one costs
    nothing)."""
    if options.n_workers == 0:
        return _decided(options, Summary(Why.NO_WORKERS, "serial"))
    key = _call_key(call, options)
    remembered = _recall(key)
    if remembered is not None:
        return _decided(options, Summary(Why.REMEMBERED, remembered.mode, remembered))
    threads = 1 if num_cpus() == 1 or options.n_workers == 1 else 2
    probe = Probe(
        call,
        reader,
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
    m = measure(call, probe.kept, sample, workers["processes"], idle_pool)
    summary = _summarize(m, probe, options, workers, key)
    chunks = [outcome.chunk for outcome in probe.finished] + probe.running
    return _decided(options, summary, chunks, probe)


def _decided(
    options: Options,
    summary: Summary,
    chunks: list[Chunk] | None = None,
    probe: Probe | None = None,
) -> Handoff:
    handoff = Handoff(options.decided(summary.mode), summary, chunks or [], probe)
    logs.info("%s", handoff.note)
    return handoff


def _summarize(
    m: Measurements, probe: Probe, options: Options, workers: dict[Mode, int], key: Hashable
) -> Summary:
    """The mode for the rest of the input and why; remembers it for later calls like this."""
    if options.total is not None:
        remaining = max(0, options.total - probe.read)
    else:
        remaining = 0 if probe.exhausted else UNKNOWN_ITEMS
    mode, predicted = recommend(m, remaining, workers)
    failed = _final_error(probe.finished) if options.stop_chunk_on_error else None
    if failed is not None:  # the call ends with it: start no pool
        return Summary(Why.FAILED, "serial", failed=failed)
    if remaining or probe.running:
        chosen = verdict(m, mode, predicted)
        _remember(key, chosen)
        return Summary(Why.MEASURED, mode, chosen)
    # Nothing left to choose for; a later call like this one gets the mode it would win
    # in, with the workers a first call would have left warm.
    again, predicted = recommend(replace(m, start_seconds=WARM_START), max(probe.read, 1), workers)
    _remember(key, verdict(m, again, predicted))
    return Summary(Why.RAN_WHOLE, mode, behaviour=Behaviour.of(m), items=probe.read)


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


def _recall(key: Hashable) -> Verdict | None:
    with _choices_lock:
        choice = _choices.get(key)
        if choice is not None:
            _choices.move_to_end(key)
        return choice


def _remember(key: Hashable, chosen: Verdict) -> None:
    with _choices_lock:
        _choices[key] = chosen
        _choices.move_to_end(key)
        while len(_choices) > REMEMBERED:
            _choices.popitem(last=False)


def forget() -> None:
    """Forget the choices made for earlier calls (:func:`fastparallel.shutdown` does)."""
    with _choices_lock:
        _choices.clear()


def _final_error(outcomes: list[Outcome]) -> Failure | None:
    """The first failed item, if any."""
    for outcome in outcomes:
        if isinstance(outcome, Done) and outcome.errors:
            offset, error = outcome.errors[0]
            return Failure(outcome.chunk.start + offset, type(error).__name__)
        if isinstance(outcome, Crashed):
            return Failure(outcome.chunk.start, type(outcome.error).__name__)
    return None
