"""What each mode costs beside the work: pickling, starting worker processes, round trips.

Pickling is measured on the first items, results and the call, as the process backend
pickles them (items and results a list at a time; ``fn, args, kwargs`` once). Starting
workers and round trips are estimated from constants measured on a 2-CPU Linux machine
(``threadpool="auto"`` never starts a pool to decide whether to start one), knowing
whether an idle pool or the template process is already there; :func:`fastparallel.advise`
times a real start and round trip where its time allows.

Worker processes import this module when advise() times a start (:func:`load_call`), so
it imports little at run time.
"""

from __future__ import annotations

import time

from fastparallel.serialize import pickling

TYPE_CHECKING = False  # worker processes import this module: no typing at run time
if TYPE_CHECKING:
    from typing import Any

    from fastparallel.auto.model import PickleCost, StartSource
    from fastparallel.backends.runner import Call

__all__ = ["ROUND_TRIP", "THREAD_ROUND_TRIP", "estimate_start", "load_call", "measure_pickling"]

ROUND_TRIP = 6e-5  # processes: one chunk to a warm worker and back, as the caller sees it
THREAD_ROUND_TRIP = 2e-5  # threads: the same
TEMPLATE_START = 0.04  # starting the template process that forks the workers
WORKER_START = (
    0.022  # a forked worker ready for its first chunk; as many start at once as there are CPUs
)
WARM_START = 0.001  # taking an idle pool left by an earlier call
_TIMED_AT_LEAST = 1e-4  # pickling that fast is timed again, and the best time kept


def load_call(blob: bytes) -> None:
    """In a worker process: unpickle a call, importing what it needs; advise() times this."""
    pickling.loads(blob)


def _timed(obj: Any, count: int) -> PickleCost:
    """Pickle and unpickle ``obj`` (``count`` items in a list): size and seconds per item."""
    from fastparallel.auto.model import PickleCost

    dump = float("inf")
    load = float("inf")
    data = b""
    for _ in range(5):
        began = time.perf_counter()
        data = pickling.dumps(obj)
        middle = time.perf_counter()
        pickling.loads(data)
        dump, load = min(dump, middle - began), min(load, time.perf_counter() - middle)
        if dump + load >= _TIMED_AT_LEAST:
            break
    return PickleCost(len(data) // count, dump / count, load / count)


def _why(what: str, exc: BaseException) -> str:
    return f"{what} cannot be pickled ({type(exc).__name__}: {str(exc)[:120]})"


def measure_pickling(
    call: Call, pairs: list[tuple[Any, Any]]
) -> tuple[PickleCost | None, PickleCost | None, PickleCost | None, str | None]:
    """Pickling the call, an item and a result (averaged over ``pairs``, the first items
    and their results), and why processes cannot run the call (None: they can)."""
    try:
        call_cost = _timed(tuple(call), 1)
    except Exception as exc:
        return None, None, None, _why("fn, its arguments or its keyword arguments", exc)
    if not pairs:
        return call_cost, None, None, None
    items, results = [p[0] for p in pairs], [p[1] for p in pairs]
    try:
        item_cost = _timed(items, len(items))
    except Exception as exc:
        return call_cost, None, None, _why("an item", exc)
    try:
        result_cost = _timed(results, len(results))
    except Exception as exc:
        return call_cost, item_cost, None, _why("a result", exc)
    return call_cost, item_cost, result_cost, None


def estimate_start(workers: int, cpus: int, idle_pool: bool) -> tuple[float, StartSource]:
    """Seconds to have ``workers`` worker processes ready for a default call, and what that
    rests on: an idle pool kept from an earlier call (``idle_pool``: the dispatcher
    knows), a running template process, or neither."""
    from fastparallel.auto.model import StartHow, StartSource
    from fastparallel.backends.processes.handles import can_fork_workers
    from fastparallel.backends.processes.template import client as template_client

    if idle_pool:
        return WARM_START, StartSource(StartHow.IDLE_POOL)
    waves = -(-workers // max(1, cpus))
    if template_client.running() or not can_fork_workers():
        return WORKER_START * waves, StartSource(StartHow.ESTIMATED)
    return TEMPLATE_START + WORKER_START * waves, StartSource(StartHow.ESTIMATED_WITH_TEMPLATE)
