"""Measuring, from Python, how much of the time the GIL is held and how busy this process is.

:class:`GilSampler` naps in the calling thread, ``NAP`` seconds at a time, and notes how
late it wakes. A thread that wants the GIL while another runs Python code waits for the
switch interval (5 ms by default) before it may ask for it, so a late wake means the GIL
was held; the share of the time spent in late wakes is the share of the time it was held
(by any thread of this process). A free-threaded build has no GIL to sample.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

__all__ = ["GilSampler", "gil_enabled", "cpu_rate", "NAP"]

NAP = 0.0005  # short beside the switch interval a thread waits for a held GIL


def gil_enabled() -> bool:
    """False on a free-threaded build running without the GIL (Python 3.13t and later)."""
    is_enabled: Callable[[], bool] | None = getattr(sys, "_is_gil_enabled", None)
    return True if is_enabled is None else is_enabled()


def cpu_rate(seconds: float) -> float:
    """Cores this process keeps busy over the next ``seconds``, this thread napping."""
    cpu, began = time.process_time(), time.monotonic()
    time.sleep(seconds)
    return (time.process_time() - cpu) / max(time.monotonic() - began, 1e-9)


class GilSampler:
    """Naps in the calling thread; the time spent in late wakes, by phase (the probe's: the
    first batch, later ones alone, two at once)."""

    def __init__(self) -> None:
        self.enabled = gil_enabled()
        self.late_after = sys.getswitchinterval() / 2
        self.held = [0.0, 0.0, 0.0]
        self.total = [0.0, 0.0, 0.0]

    def nap(self, phase: int) -> None:
        began = time.perf_counter()
        time.sleep(NAP)
        spent = time.perf_counter() - began
        self.total[phase] += spent
        if spent - NAP > self.late_after:
            self.held[phase] += spent

    def share(self, phase: int) -> float:
        total = self.total[phase]
        return self.held[phase] / total if self.enabled and total else 0.0
