"""Measuring, from Python, how much of the time the GIL is held.

:class:`GilSampler` naps in the calling thread, ``NAP`` seconds at a time, and notes how
late it wakes. A thread that wants the GIL while another runs Python code waits for the
switch interval (5 ms by default) before it may ask for it, so a late wake means the GIL
was held; the share of the time spent in late wakes is the share of the time it was held
(by any thread of this process). A free-threaded build has no GIL to sample.

On a machine busy with other programs, a thread also waits for a CPU: a nap ends late,
an item takes longer while its thread is off the CPU, and neither is the GIL's doing nor
the item's. :class:`StarvedClock` reads that time where Linux tells it
(``/proc/thread-self/schedstat``), so that it can be taken out.
"""

from __future__ import annotations

import os
import queue
import sys
import time
from collections.abc import Callable
from typing import Any, NamedTuple, TypeVar

from fastparallel.backends.base import wait_and_drain

__all__ = ["NAP", "GilSampler", "StarvedClock", "gil_enabled"]

T = TypeVar("T")


class _Nap(NamedTuple):
    """One nap: what arrived meanwhile, how long it took, how much of it was late for the GIL."""

    got: list[Any]
    spent: float
    late: float


NAP = 0.0005  # short beside the switch interval a thread waits for a held GIL
LATE_AT_LEAST = (
    0.0003  # a wake later than this (and than twice the usual overshoot) found the GIL held
)


def gil_enabled() -> bool:
    """False on a free-threaded build running without the GIL (Python 3.13t and later)."""
    is_enabled: Callable[[], bool] | None = getattr(sys, "_is_gil_enabled", None)
    return True if is_enabled is None else is_enabled()


class StarvedClock:
    """Seconds the thread that made this clock spent ready to run but waiting for a CPU
    (Linux's run delay); always 0 where the system does not tell. Close it when done."""

    def __init__(self) -> None:
        try:
            self._fd: int | None = os.open("/proc/thread-self/schedstat", os.O_RDONLY)
        except OSError:
            self._fd = None

    def __call__(self) -> float:
        if self._fd is None:
            return 0.0
        try:
            return int(os.pread(self._fd, 64, 0).split()[1]) / 1e9
        except (OSError, ValueError, IndexError):
            return 0.0

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class GilSampler:
    """Naps in the calling thread; the time spent in late wakes, by phase (the probe's: the
    first batch, later ones alone, two at once).

    A wake counts as late past ``late_after``: a little more than the naps overshoot with
    the GIL free (:meth:`calibrate`), well under the switch interval, so that a holder that
    lets the GIL go every millisecond or two (between batches, on a short system call)
    still counts as holding it.
    """

    def __init__(self) -> None:
        self.enabled = gil_enabled()
        self.late_after = sys.getswitchinterval() / 2
        self.held = [0.0, 0.0, 0.0]
        self.total = [0.0, 0.0, 0.0]
        self.starved = StarvedClock()  # of the calling thread, which naps

    def _nap(self, inbox: queue.SimpleQueue[Any]) -> _Nap:
        """One nap, waiting for ``inbox``."""
        began = time.perf_counter()
        starved = self.starved()
        got = wait_and_drain(inbox, NAP)
        spent = time.perf_counter() - began
        return _Nap(got, spent, spent - NAP - (self.starved() - starved))  # not late for a CPU

    def calibrate(self, naps: int = 10) -> float:
        """Nap while no other thread of ours runs, to learn how much naps overshoot here;
        returns the cores this process kept busy meanwhile (threads that were already
        busy, or a library's that still spin after earlier work)."""
        cpu, began = time.process_time(), time.monotonic()
        nothing: queue.SimpleQueue[None] = queue.SimpleQueue()
        overshoot = max(self._nap(nothing).late for _ in range(naps))
        self.late_after = min(self.late_after, max(LATE_AT_LEAST, 2 * overshoot))
        return (time.process_time() - cpu) / max(time.monotonic() - began, 1e-9)

    def wait(self, inbox: queue.SimpleQueue[T], phase: int) -> list[T]:
        """Nap once, waking early for what ``inbox`` receives (returned); a full nap
        counts for ``phase``, one cut short by an arrival does not."""
        nap = self._nap(inbox)
        if nap.got:
            return nap.got
        self.total[phase] += nap.spent
        if nap.late > self.late_after:
            self.held[phase] += nap.spent
        return nap.got

    def share(self, phase: int) -> float:
        total = self.total[phase]
        return self.held[phase] / total if self.enabled and total else 0.0
