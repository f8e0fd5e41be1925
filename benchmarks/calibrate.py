"""Calibrates :func:`benchmarks.tasks.spin` so that CPU-bound tasks last a known time."""

from __future__ import annotations

import time

from .tasks import spin

_PROBE_LOOPS = 200_000


def loops_per_ms(tries: int = 5) -> float:
    """How many ``spin`` loops run in one millisecond here (best of ``tries``)."""
    best = float("inf")
    for _ in range(tries):
        start = time.perf_counter()
        spin(_PROBE_LOOPS)
        best = min(best, time.perf_counter() - start)
    return _PROBE_LOOPS / (best * 1000)
