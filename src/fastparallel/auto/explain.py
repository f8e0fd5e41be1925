"""Plain words for what the cost model saw, in one place: the one-line summary
``threadpool="auto"`` logs and shows in the progress bar, and the reasons
:class:`~fastparallel.Advice` lists.

The choice is kept as records (:class:`Verdict`, :class:`Summary`: a mode, what items
do, why), never as text: auto remembers a :class:`Verdict` for later calls, and the
words are written from the records here, when they are shown.
"""

from __future__ import annotations

import enum
import math
from dataclasses import replace
from typing import NamedTuple

from fastparallel.auto.model import (
    MARGIN,
    UNKNOWN_ITEMS,
    Kind,
    Measurements,
    StartCaveat,
    StartHow,
    StartSource,
    classify,
    predict,
)
from fastparallel.errors import bytes_text
from fastparallel.options import Mode

__all__ = [
    "Behaviour",
    "Failure",
    "Summary",
    "Verdict",
    "Why",
    "behaviour_text",
    "bytes_text",
    "reasons",
    "seconds_text",
    "start_text",
    "summary_text",
    "verdict",
]


class Behaviour(NamedTuple):
    """What items do, as the summary says it: their ``kind`` (:func:`.model.classify`),
    ``seconds`` each (a lower bound unless ``finished``), the ``gil`` share, the ``cores``
    busy and the ``overlap`` of two threads."""

    kind: Kind
    seconds: float
    finished: bool
    gil: float
    cores: float
    overlap: float | None

    @classmethod
    def of(cls, m: Measurements) -> Behaviour:
        return cls(classify(m), m.seconds_per_item, m.finished, m.gil, m.cores, m.overlap)


class Verdict(NamedTuple):
    """A mode and why: what items do; ``processes_out``, why processes cannot run the call,
    where that made threads win; ``no_pool_sooner``: serial, as no pool would finish sooner."""

    mode: Mode
    behaviour: Behaviour
    processes_out: str | None = None
    no_pool_sooner: bool = False


class Why(enum.Enum):
    """How ``threadpool="auto"`` came to its mode."""

    MEASURED = "measured"  # the probe measured this call's first items
    REMEMBERED = "remembered"  # measured on an earlier call like this one
    NO_WORKERS = "no workers"  # n_workers=0: serially, nothing measured
    FAILED = "failed"  # an item failed while measuring, and that ends the call
    RAN_WHOLE = "ran whole"  # every item ran while measuring


class Failure(NamedTuple):
    """The first item that failed while measuring: its input index (``item``) and its
    error's type name."""

    item: int
    error: str


class Summary(NamedTuple):
    """What auto chose and why: ``verdict`` (MEASURED, REMEMBERED), ``behaviour`` and
    ``items`` (RAN_WHOLE: what they did, how many ran), ``failed`` (FAILED)."""

    why: Why
    mode: Mode
    verdict: Verdict | None = None
    behaviour: Behaviour | None = None
    items: int = 0
    failed: Failure | None = None


def seconds_text(seconds: float) -> str:
    """``"40 ms"``, ``"0.06 µs"``, ``"1.23 s"``: two or three significant digits."""
    if math.isinf(seconds):
        return "cannot run"
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6)):
        if seconds >= scale or unit == "µs":
            value = seconds / scale
            return f"{value:.2f} {unit}" if value < 10 else f"{value:.3g} {unit}"
    raise AssertionError("unreachable")


def _time_phrase(b: Behaviour) -> str:
    if not b.finished:
        return f"the first item ran over {seconds_text(b.seconds)}"
    return f"items take {seconds_text(b.seconds)}"


def behaviour_text(b: Behaviour) -> str:
    """``"items take 40 ms and hold the GIL 98% of the time"``.

    Example:
        >>> from fastparallel.auto.model import EXAMPLE
        >>> behaviour_text(Behaviour.of(EXAMPLE))
        'items take 40 ms and hold the GIL 98% of the time'
    """
    what = {
        Kind.NO_GIL: "run without a GIL (free-threaded Python)",
        Kind.WAITS: f"wait {1 - min(1.0, b.cores):.0%} of the time",
        Kind.HOLDS_GIL: f"hold the GIL {b.gil:.0%} of the time",
        Kind.LIBRARY: f"keep {b.cores:.1f} cores busy already",
        Kind.SHARED: f"release the GIL, but two threads ran only {b.overlap or 0:.1f}x as fast as one",
        Kind.RELEASES_GIL: f"release the GIL (held {b.gil:.0%} of the time)",
    }[b.kind]
    return f"{_time_phrase(b)} and {what}"


def verdict(m: Measurements, mode: Mode, predicted: dict[Mode, float]) -> Verdict:
    """``mode`` for ``m`` and why, as a record (:func:`summary_text` words it)."""
    b = Behaviour.of(m)
    out = m.pickle_error if mode == "threads" and b.kind is Kind.HOLDS_GIL else None
    sooner = (
        mode == "serial"
        and min(predicted["threads"], predicted["processes"]) >= predicted["serial"]
    )
    return Verdict(mode, b, out, sooner)


def _verdict_text(v: Verdict) -> str:
    text = behaviour_text(v.behaviour)
    if v.processes_out is not None:
        return f"{text}; processes are out: {v.processes_out}"
    if v.no_pool_sooner:
        return f"{text}: no pool is predicted to finish sooner"
    return text


def summary_text(s: Summary) -> str:
    """The line auto logs and the progress bar shows.

    Example:
        >>> from fastparallel.auto.model import EXAMPLE
        >>> v = Verdict("processes", Behaviour.of(EXAMPLE))
        >>> summary_text(Summary(Why.MEASURED, "processes", v))
        'auto: processes — items take 40 ms and hold the GIL 98% of the time'
        >>> summary_text(Summary(Why.FAILED, "serial", failed=Failure(0, "ZeroDivisionError")))
        'auto: serial — item 0 raised ZeroDivisionError while measuring; that ends the call'
    """
    if s.why is Why.NO_WORKERS:
        return "auto: serial — n_workers=0"
    if s.why is Why.FAILED:
        assert s.failed is not None
        failed = f"item {s.failed.item} raised {s.failed.error}"
        return f"auto: serial — {failed} while measuring; that ends the call"
    if s.why is Why.RAN_WHOLE:
        assert s.behaviour is not None
        return f"auto: all {s.items} items ran while measuring them; {behaviour_text(s.behaviour)}"
    assert s.verdict is not None
    if s.why is Why.REMEMBERED:
        return (
            f"auto: {s.mode}, as measured on an earlier call of this function — "
            f"{_verdict_text(s.verdict)}"
        )
    return f"auto: {s.mode} — {_verdict_text(s.verdict)}"


def start_text(source: StartSource) -> str:
    """How the start of worker processes was found, in words.

    Example:
        >>> start_text(StartSource(StartHow.MEASURED_STARTED, 2))
        'measured: started 2 workers, each unpickling fn'
    """
    text = {
        StartHow.IDLE_POOL: "an idle pool is ready",
        StartHow.ESTIMATED: "estimated",
        StartHow.ESTIMATED_WITH_TEMPLATE: "estimated, with the template process",
        StartHow.MEASURED_IDLE_POOL: "measured: an idle pool was ready, each unpickling fn",
        StartHow.MEASURED_STARTED: f"measured: started {source.workers} workers, each unpickling fn",
    }[source.how]
    if source.caveat is StartCaveat.NO_TIME:
        text += ": no time left to measure it"
    elif source.caveat is StartCaveat.TOO_SLOW:
        text += ": starting them took longer than the time left"
    return text


def reasons(
    m: Measurements,
    mode: Mode,
    predicted: dict[Mode, float],
    n_items: int | None,
    workers: dict[Mode, int],
) -> list[str]:
    """A few sentences: how long items take, what they spend it on, the overheads that
    matter, and the verdict."""
    out = [_timing(m), _behaviour(m, workers)]
    overheads = _overheads(m, predicted, n_items, workers)
    if overheads:
        out.append(overheads)
    out.append(_verdict(mode, predicted, n_items))
    return out


def memory_text(
    per_item: int, budget: int, fitted: dict[Mode, int], workers: dict[Mode, int]
) -> str:
    """Why memory, not CPU, limits the speedup: the items that fit at once."""
    return (
        f"Memory, not CPU, limits the speedup: each item needs about {bytes_text(per_item)}, "
        f"so {bytes_text(budget)} fit {fitted['processes']} at once where the CPUs would keep "
        f"{workers['processes']} busy (parallel() runs that many at a time, measuring as it goes)."
    )


def _timing(m: Measurements) -> str:
    if not m.finished:
        return (
            f"The first item had run {seconds_text(m.seconds_per_item)} without finishing; "
            "items take at least that long."
        )
    spread = f" (± {m.spread:.0%})" if m.sampled > 1 else ""
    text = f"Items take {seconds_text(m.seconds_per_item)} each{spread}, measured on {m.sampled:,} items."
    if m.warm_up:
        text += (
            f" The first took {seconds_text(m.warm_up + m.seconds_per_item)}: one-time costs (imports, "
            "caches) that each new worker process pays again."
        )
    return text


def _behaviour(m: Measurements, workers: dict[Mode, int]) -> str:
    kind, cpus = classify(m), m.cpus
    cpu_word = "CPU" if cpus == 1 else "CPUs"
    text = {
        Kind.NO_GIL: "This Python runs without a GIL, so threads run Python code in parallel, with nothing to pickle.",
        Kind.WAITS: (
            f"They wait most of the time (their thread is on a CPU {m.thread_cpu:.0%} of it): threads "
            "overlap the waits, and more threads than CPUs help."
        ),
        Kind.HOLDS_GIL: (
            f"They hold the GIL {m.gil:.0%} of the time: threads run them one at a time; processes run "
            f"up to {min(workers['processes'], cpus)} at once on {cpus} {cpu_word}."
        ),
        Kind.LIBRARY: (
            f"Each keeps {m.cores:.1f} cores busy (a library's own threads): on {cpus} "
            f"{cpu_word}, running several at once gains little."
        ),
        Kind.SHARED: (
            f"They release the GIL (held {m.gil:.0%} of the time), yet two threads ran only "
            f"{m.overlap or 0:.1f}x as many items per second as one: something they share limits them "
            "(memory, a lock, a library's own threads, or other programs on the CPUs)."
        ),
        Kind.RELEASES_GIL: (
            f"They run code that releases the GIL (held {m.gil:.0%} of the time): threads run them on "
            f"{cpus} {cpu_word} at once, with nothing to pickle."
        ),
    }[kind]
    if m.overlap is not None and kind is not Kind.SHARED:
        text += f" Two threads ran {m.overlap:.1f}x as many items per second as one."
    return text


def _overheads(
    m: Measurements, predicted: dict[Mode, float], n_items: int | None, workers: dict[Mode, int]
) -> str:
    if m.pickle_error is not None:
        could = predict(
            replace(m, pickle_error=None), UNKNOWN_ITEMS if n_items is None else n_items, workers
        )
        return (
            f"Processes cannot run this call: {m.pickle_error}. They would take about "
            f"{seconds_text(could['processes'])}: define fn at module level, with nothing in it or its "
            "arguments that cannot be pickled (locks, open files, generators), to use them."
        )
    if m.item is None or m.result is None or math.isinf(predicted["processes"]):
        return ""
    per_item = m.item.dump_seconds + m.result.load_seconds + (m.item.nbytes + m.result.nbytes) / 1e9
    text = (
        f"Processes start {workers['processes']} workers in {seconds_text(m.start_seconds)} "
        f"({start_text(m.start_source)}), and pickle each item ({bytes_text(m.item.nbytes)}) and result "
        f"({bytes_text(m.result.nbytes)}), {seconds_text(per_item)} per item in this process"
    )
    if per_item > m.seconds_per_item:
        text += ": more than the item's own work"
    return text + "."


def _verdict(mode: Mode, predicted: dict[Mode, float], n_items: int | None) -> str:
    count = (
        f"{n_items:,} items"
        if n_items is not None
        else "every 1,000 items (pass total= for the whole input)"
    )
    serial = predicted["serial"]
    if mode == "serial":
        return (
            f"Recommended: serial, {seconds_text(serial)} for {count}: neither threads "
            f"({seconds_text(predicted['threads'])}) nor processes ({seconds_text(predicted['processes'])}) "
            f"is predicted to take less than {1 - MARGIN:.0%} of that."
        )
    speedup = serial / predicted[mode] if predicted[mode] > 0 else math.inf
    return (
        f"Recommended: {mode}, predicted {seconds_text(predicted[mode])} for {count}, against "
        f"{seconds_text(serial)} serially ({speedup:.1f}x)."
    )
