"""The cost model behind :func:`~fastparallel.advise` and ``threadpool="auto"``.

One model serves both, so that auto chooses what advise() would recommend for the same
measurements. It is Amdahl's law with measured overheads: a mode's wall time is the
part that runs in one place (starting workers, a round trip per chunk) plus the work
divided by the number of items that can run at once:

* **serial**: one at a time;
* **threads**: at most ``n_workers``, at most 1 ÷ (the share of an item's time it holds
  the GIL), and at most the CPUs ÷ the cores an item keeps busy;
* **processes**: at most ``n_workers`` and the CPUs ÷ the cores an item keeps busy,
  after starting the workers, with every item and result pickled, sent through a pipe
  and unpickled. The calling process does its share of that one item after another,
  while the workers run: the longest of the two, or of all the CPU time divided by the
  CPUs, sets the time.

Threads that take turns at the GIL also lose time handing it over (``GIL_HANDOVER``).
Where two threads of code that leaves the GIL free overlapped less than this predicts (a
library's own threads, or cores busy with other work), the measured overlap wins.
The simplest mode (serial, then threads, then processes) is recommended unless a less
simple one is predicted to take at most ``1 - MARGIN`` of its time.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, replace
from typing import NamedTuple

from fastparallel.core.chunking import MAX_CHUNK, TARGET_BYTES, TARGET_SECONDS
from fastparallel.options import Mode

__all__ = [
    "MARGIN",
    "MODES",
    "UNKNOWN_ITEMS",
    "Kind",
    "Measurements",
    "PickleCost",
    "StartCaveat",
    "StartHow",
    "StartSource",
    "classify",
    "effective_cores",
    "predict",
    "recommend",
]

MODES: tuple[Mode, ...] = ("serial", "threads", "processes")  # simplest first
_LESS_SIMPLE: tuple[Mode, ...] = MODES[1:]
MARGIN = 0.1
UNKNOWN_ITEMS = 1000  # predictions are for this many items when the input's length is unknown
PER_ITEM = 3e-8  # the dispatcher's own cost per item: reading the input, placing the result
PROCESS_ITEM = (
    6e-8  # the caller's cost per item sent to a process, beyond pickling its item and result
)
THREAD_START = 1e-4  # starting one thread
PIPE_BYTES_PER_SECOND = 1e9  # copying pickled bytes through a pipe, in the caller
# Threads taking turns at the GIL lose time handing it over: 12-22% slower than serial for
# pure-Python items of 10 µs to 70 ms on 6 threads, on a 2-CPU Linux machine.
GIL_HANDOVER = 0.85


@dataclass(frozen=True)
class PickleCost:
    """The pickled size of an object (on average, for items and results), and the
    seconds to pickle it (``dump_seconds``) and to unpickle it (``load_seconds``)."""

    nbytes: int
    dump_seconds: float
    load_seconds: float


_NOTHING = PickleCost(0, 0.0, 0.0)
WAITING = 0.3  # an item whose process keeps less of a core busy than this mostly waits
HOLDS_GIL = 0.5  # an item whose thread holds the GIL this share of the time or more


class StartHow(enum.Enum):
    """How the cost of starting worker processes was found."""

    IDLE_POOL = "idle pool"  # estimated: an idle pool is ready
    ESTIMATED = "estimated"  # from constants, the template process running (or unavailable)
    ESTIMATED_WITH_TEMPLATE = "estimated with template"  # ...and starting the template first
    MEASURED_IDLE_POOL = "measured idle pool"  # advise() timed it: an idle pool was ready
    MEASURED_STARTED = "measured started"  # advise() timed starting them


class StartCaveat(enum.Enum):
    """Why advise() kept the estimate instead of timing a start."""

    NO_TIME = "no time"  # no time was left to measure it
    TOO_SLOW = "too slow"  # starting them took longer than the time left


class StartSource(NamedTuple):
    """How :attr:`Measurements.start_seconds` was found: ``how``, the workers started
    where :func:`~fastparallel.advise` timed it, and ``caveat``, why it kept the
    estimate instead (None: nothing to say). ``Advice.reasons`` say it in words.

    Example:
        >>> StartSource(StartHow.MEASURED_STARTED, workers=2)
        StartSource(how=<StartHow.MEASURED_STARTED: 'measured started'>, workers=2, caveat=None)
    """

    how: StartHow
    workers: int = 0
    caveat: StartCaveat | None = None


@dataclass(frozen=True)
class Measurements:
    """What was measured of a function on its first items, and of the machine.

    Attributes:
        seconds_per_item: median wall time of an item run alone (if none finished, how
            long the first one had run: a lower bound).
        spread: standard deviation of those times over their mean (0 for one).
        sampled: items run to the end. read: items taken from the input.
        finished: whether any item finished (else ``seconds_per_item`` is a lower bound).
        thread_cpu: share of an item's time its thread was on a CPU.
        cores: CPU cores the process kept busy per item running alone (about 1 when
            computing, 0 when waiting, more with a library's own threads).
        gil: share of an item's time the GIL was held (0 on a free-threaded build).
        overlap: items per second on two threads over items per second alone (None:
            not measured).
        call, item, result: pickling ``fn, args, kwargs`` (sent once per worker), an
            item and a result (None: not measured).
        pickle_error: why processes cannot run this call (None: they can).
        warm_up: how much longer than the others the first item took (one-time costs:
            imports, caches), which each new worker process pays again.
        start_seconds: starting the worker processes; start_source: how it was found
            (a :class:`StartSource`).
        round_trip: processes: one chunk to a worker and back, beyond its work.
        thread_round_trip: the same on threads.
        cpus: the CPUs this process may use. free_threaded: Python runs without a GIL.
    """

    seconds_per_item: float
    spread: float
    sampled: int
    read: int
    finished: bool
    thread_cpu: float
    cores: float
    gil: float
    overlap: float | None
    call: PickleCost | None
    item: PickleCost | None
    result: PickleCost | None
    pickle_error: str | None
    warm_up: float
    start_seconds: float
    start_source: StartSource
    round_trip: float
    thread_round_trip: float
    cpus: int
    free_threaded: bool


_SMALL = PickleCost(8, 1e-7, 1e-7)
EXAMPLE = Measurements(  # for the examples: 40 ms items of pure Python on 2 CPUs
    seconds_per_item=0.04,
    spread=0.02,
    sampled=10,
    read=10,
    finished=True,
    thread_cpu=1.0,
    cores=1.0,
    gil=0.98,
    overlap=1.0,
    call=_SMALL,
    item=_SMALL,
    result=_SMALL,
    pickle_error=None,
    warm_up=0.0,
    start_seconds=0.05,
    start_source=StartSource(StartHow.ESTIMATED),
    round_trip=6e-5,
    thread_round_trip=2e-5,
    cpus=2,
    free_threaded=False,
)


class Kind(enum.Enum):
    """What an item spends its time on, as far as the measurements tell."""

    NO_GIL = "no-gil"  # free-threaded Python: threads run Python code in parallel
    WAITS = "waits"  # off the CPU most of the time (sleeps, I/O)
    HOLDS_GIL = "gil"  # Python code that holds the GIL
    LIBRARY = "library"  # a library's own threads keep cores busy already
    SHARED = "shared"  # releases the GIL, yet two threads overlapped less than the cores allow
    RELEASES_GIL = "c"  # code that releases the GIL


def classify(m: Measurements) -> Kind:
    """What an item of ``m`` spends its time on (the reasons say it in words).

    Example:
        >>> from dataclasses import replace
        >>> classify(replace(EXAMPLE, gil=0.98))
        <Kind.HOLDS_GIL: 'gil'>
        >>> classify(replace(EXAMPLE, gil=0.02, cores=0.01))
        <Kind.WAITS: 'waits'>
    """
    if m.free_threaded:
        return Kind.NO_GIL
    if m.cores < WAITING:
        return Kind.WAITS
    if m.gil >= HOLDS_GIL:
        return Kind.HOLDS_GIL
    if m.cores >= 1.5:
        return Kind.LIBRARY
    return Kind.SHARED if effective_cores(m) > 1.3 * m.cores else Kind.RELEASES_GIL


def effective_cores(m: Measurements) -> float:
    """Cores an item keeps busy, as far as parallel work can tell: more than measured
    alone when two threads of GIL-free work overlapped less than the CPUs allowed."""
    cores = max(m.cores, 0.01)
    if m.overlap is not None and m.gil < 0.5 and m.cpus > 1:
        expected = min(2.0, m.cpus / cores)
        if m.overlap < 0.9 * expected:
            cores = max(cores, m.cpus / max(m.overlap, 1.0))
    return cores


def _chunks(n: float, t: float, workers: int, result_bytes: int) -> float:
    """How many chunks the dispatcher cuts ``n`` items of ``t`` seconds into (see chunking)."""
    if n <= 0:
        return 0.0
    cap = max(1, min(MAX_CHUNK, math.ceil(n / (4 * workers))))
    size = cap if t <= 0 else int(TARGET_SECONDS / t)
    if result_bytes:
        size = min(size, int(TARGET_BYTES / result_bytes))
    return math.ceil(n / max(1, min(cap, size))) + min(workers, n)  # the first chunks hold one item


def predict(m: Measurements, n_items: int, workers: dict[Mode, int]) -> dict[Mode, float]:
    """Predicted wall time of ``n_items`` items in each mode, with ``workers[mode]`` workers."""
    n, t = float(n_items), m.seconds_per_item
    predicted: dict[Mode, float] = {"serial": n * (t + PER_ITEM)}
    w = max(1, min(workers["threads"], n_items))
    at_once = max(1.0, min(w, m.cpus / effective_cores(m), 1 / m.gil if m.gil > 0 else math.inf))
    if m.gil >= 0.5 and w > 1:
        at_once *= GIL_HANDOVER
    predicted["threads"] = (
        THREAD_START * w
        + _chunks(n, t, w, 0) * m.thread_round_trip
        + n * PER_ITEM
        + n * t / at_once
    )
    predicted["processes"] = _processes(m, n, t, max(1, min(workers["processes"], n_items)))
    return predicted


def _processes(m: Measurements, n: float, t: float, w: int) -> float:
    """Starting the workers, then the longest of: the calling process's part (pickling
    items, unpickling results, one item after another: it overlaps the workers'), the
    workers' part (``at_once`` items at a time), and all of it on the CPUs there are."""
    if m.pickle_error is not None:
        return math.inf
    call, item, result = m.call or _NOTHING, m.item or _NOTHING, m.result or _NOTHING
    once = (
        m.start_seconds
        + m.warm_up
        + call.dump_seconds
        + w * call.nbytes / PIPE_BYTES_PER_SECOND
        + call.load_seconds
    )
    in_caller = (
        item.dump_seconds
        + result.load_seconds
        + PER_ITEM
        + PROCESS_ITEM
        + (item.nbytes + result.nbytes) / PIPE_BYTES_PER_SECOND
    )
    in_worker = t + item.load_seconds + result.dump_seconds
    # Processes share no allocator or lock: only the cores measured alone limit them.
    cores = max(m.cores, 0.01)
    at_once = max(1.0, min(w, m.cpus / cores))
    caller = n * in_caller + _chunks(n, t, w, result.nbytes) * m.round_trip
    on_cpus = n * (in_caller + in_worker * cores) / m.cpus
    return once + max(caller, n * in_worker / at_once, on_cpus)


def recommend(
    m: Measurements, n_items: int, workers: dict[Mode, int]
) -> tuple[Mode, dict[Mode, float]]:
    """The recommended mode for ``n_items`` items, and the predictions it rests on.

    The simplest mode that no less simple one beats by more than ``MARGIN``. Where that
    would be processes but they cannot run the call (``pickle_error``), threads: the pool
    that needs nothing pickled (the reasons say what processes would have gained).
    """
    predicted = predict(m, n_items, workers)
    best = _simplest_best(predicted)
    if (
        m.pickle_error is not None
        and _simplest_best(predict(replace(m, pickle_error=None), n_items, workers)) == "processes"
    ):
        best = "threads"
    return best, predicted


def _simplest_best(predicted: dict[Mode, float]) -> Mode:
    best: Mode = "serial"
    for mode in _LESS_SIMPLE:
        if predicted[mode] < (1 - MARGIN) * predicted[best]:
            best = mode
    return best
