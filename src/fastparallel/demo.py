"""``python -m fastparallel demo``: why threads suit waiting and processes suit computing.

Two synthetic workloads, no downloads: a CPU-bound one (pure-Python arithmetic, like
training many small models) and an I/O-bound one (waits, like reading files or calling
an API). Each runs serially, on threads and on processes, with a progress bar; then a
table of times and speedups, and which pool fits which work.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from .api import parallel
from .cpus import num_cpus

__all__ = ["main", "cpu_task", "io_task"]


def cpu_task(loops: int) -> int:
    """Pure-Python work that holds the GIL the whole time."""
    total = 0
    for i in range(loops):
        total += i * i % 7
    return total


def io_task(seconds: float) -> float:
    """Work that mostly waits (the GIL is released while sleeping, as during I/O)."""
    time.sleep(seconds)
    return seconds


def _calibrate(target_seconds: float) -> int:
    loops = 20_000
    while True:
        t0 = time.perf_counter()
        cpu_task(loops)
        elapsed = time.perf_counter() - t0
        if elapsed > 0.02:
            return max(1, int(loops * target_seconds / elapsed))
        loops *= 4


def _time(fn: Callable[..., Any], items: Sequence[Any], title: str, **kwargs: Any) -> float:
    print(f"  {title}", flush=True)
    t0 = time.perf_counter()
    parallel(fn, items, progress=True, **kwargs)
    return time.perf_counter() - t0


def run(scale: float = 1.0) -> list[tuple[str, str, float, float]]:
    """Run both workloads; returns rows of (workload, how, seconds, speedup)."""
    cpus = num_cpus()
    cpu_items = [_calibrate(0.1 * scale)] * max(8, 4 * cpus)
    io_items = [0.05 * scale] * 64
    rows: list[tuple[str, str, float, float]] = []
    for name, fn, items in (
        (f"CPU-bound: {len(cpu_items)} tasks of ~{0.1 * scale:.2f} s", cpu_task, cpu_items),
        (f"I/O-bound: {len(io_items)} waits of {0.05 * scale:.2f} s", io_task, io_items),
    ):
        print(f"\n{name}")
        serial = _time(fn, items, "serial (n_workers=0)", n_workers=0)
        threads = _time(fn, items, "threads (threadpool=True, n_workers=32)", threadpool=True, n_workers=32)
        processes = _time(fn, items, f"processes (n_workers={cpus})", n_workers=cpus)
        for how, seconds in (("serial", serial), ("threads", threads), ("processes", processes)):
            rows.append((name, how, seconds, serial / seconds))
    return rows


def _table(rows: list[tuple[str, str, float, float]]) -> str:
    width = max(len(r[0]) for r in rows)
    lines = [f"{'workload':<{width}}  {'how':<9}  {'time':>7}  {'speedup':>7}", "-" * (width + 31)]
    for name, how, seconds, speedup in rows:
        lines.append(f"{name:<{width}}  {how:<9}  {seconds:6.2f}s  {speedup:6.1f}x")
    return "\n".join(lines)


ADVICE = """
What this shows:
- CPU-bound pure-Python work: threads barely help (the GIL lets one thread run Python
  at a time); processes use every core. Use the default, processes.
- I/O-bound work: threads overlap the waits, many more threads than cores, at almost no
  cost. Processes help only as far as there are worker processes. Use threadpool=True.
- NumPy, image decoders and other C code that releases the GIL: threads, which also
  avoid pickling inputs and results between processes.
"""


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fastparallel")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="compare serial, threads and processes on CPU- and I/O-bound work")
    demo.add_argument("--scale", type=float, default=1.0, help="multiply every task's duration")
    args = parser.parse_args(argv)
    if args.command == "demo":
        print(f"fastparallel demo on {num_cpus()} CPUs (Python {sys.version.split()[0]})")
        rows = run(args.scale)
        print("\n" + _table(rows))
        print(ADVICE)
    return 0
