"""``python -m fastparallel demo``: why threads suit waiting and processes suit computing.

Two synthetic workloads, no downloads: a CPU-bound one (pure-Python arithmetic, like
training many small models) and an I/O-bound one (waits, like reading files or calling
an API). For each, :func:`~fastparallel.advise` predicts the three modes first; then each
runs serially, on threads and on processes (with the workers the advice assumed), and
with ``threadpool="auto"``, with a progress bar; then a table of predicted and measured
times, and which pool fits which work.
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from fastparallel.api import advise, parallel
from fastparallel.cpus import num_cpus

__all__ = ["cpu_task", "io_task", "main"]


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


class _Choice(logging.Handler):
    """Catches the mode ``threadpool="auto"`` logs."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.mode = "?"

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if message.startswith("auto: "):
            self.mode = message.split()[1]


def _auto(fn: Callable[..., Any], items: Sequence[Any]) -> tuple[str, float]:
    """The mode ``threadpool="auto"`` chose, and how long the call took."""
    logger = logging.getLogger("fastparallel")
    choice, level = _Choice(), logger.level
    logger.addHandler(choice)
    logger.setLevel(logging.INFO)
    try:
        seconds = _time(fn, items, 'threadpool="auto"', threadpool="auto")
    finally:
        logger.removeHandler(choice)
        logger.setLevel(level)
    return choice.mode, seconds


Row = tuple[str, str, int, float, float, str]  # workload, mode, workers, predicted, measured, mark


def run(scale: float = 1.0) -> list[Row]:
    """Run both workloads: advice first, then each mode; rows of (workload, mode, workers,
    predicted seconds, measured seconds, mark)."""
    cpu_items = [_calibrate(0.1 * scale)] * max(8, 4 * num_cpus())
    io_items = [0.05 * scale] * 64
    rows: list[Row] = []
    for name, fn, items in (
        (f"CPU-bound: {len(cpu_items)} tasks of ~{0.1 * scale:.2f} s", cpu_task, cpu_items),
        (f"I/O-bound: {len(io_items)} waits of {0.05 * scale:.2f} s", io_task, io_items),
    ):
        print(f"\n{name}\n  advise() ...", flush=True)
        advice = advise(fn, items, max_seconds=max(0.5, 2 * scale))
        workers = advice.n_workers
        measured = {
            "serial": _time(fn, items, "serial (n_workers=0)", n_workers=0),
            "threads": _time(
                fn,
                items,
                f"threads (threadpool=True, n_workers={workers['threads']})",
                threadpool=True,
                n_workers=workers["threads"],
            ),
            "processes": _time(
                fn,
                items,
                f"processes (n_workers={workers['processes']})",
                n_workers=workers["processes"],
            ),
        }
        for mode in ("serial", "threads", "processes"):
            mark = "<- advised" if mode == advice.recommended else ""
            rows.append((name, mode, workers[mode], advice.predicted[mode], measured[mode], mark))
        chosen, seconds = _auto(fn, items)
        used = next((count for mode, count in workers.items() if mode == chosen), 0)
        rows.append((name, "auto", used, math.nan, seconds, f"chose {chosen}"))
    return rows


def _table(rows: list[Row]) -> str:
    width = max(len(r[0]) for r in rows)
    lines = [
        f"{'workload':<{width}}  {'mode':<9}  {'workers':>7}  {'predicted':>9}  {'measured':>8}  {'speedup':>7}",
        "-" * (width + 53),
    ]
    serial = {name: measured for name, mode, _, _, measured, _ in rows if mode == "serial"}
    for name, mode, workers, predicted, measured, mark in rows:
        guess = "" if math.isnan(predicted) else f"{predicted:8.2f}s"
        speedup = f"{serial[name] / measured:6.1f}x"
        lines.append(
            f"{name:<{width}}  {mode:<9}  {workers:>7}  {guess:>9}  {measured:7.2f}s  {speedup:>7}  {mark}".rstrip()
        )
    return "\n".join(lines)


ADVICE = """
What this shows (predicted: advise(), before anything ran; measured: each mode run):
- CPU-bound pure-Python work: threads barely help (the GIL lets one thread run Python
  at a time); processes use every core. Use the default, processes.
- I/O-bound work: threads overlap the waits, many more threads than cores, at almost no
  cost. Processes help only as far as there are worker processes. Use threadpool=True.
- NumPy, image decoders and other C code that releases the GIL: threads, which also
  avoid pickling inputs and results between processes.
- Not sure? advise(fn, items) measures your function on a sample and predicts each mode;
  threadpool="auto" measures the first items and runs the rest where they fit best.
"""


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fastparallel")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser(
        "demo", help="advise() and measure serial, threads and processes on CPU- and I/O-bound work"
    )
    demo.add_argument("--scale", type=float, default=1.0, help="multiply every task's duration")
    args = parser.parse_args(argv)
    if args.command == "demo":
        print(f"fastparallel demo on {num_cpus()} CPUs (Python {sys.version.split()[0]})")
        rows = run(args.scale)
        print("\n" + _table(rows))
        print(ADVICE)
    return 0


if __name__ == "__main__":
    sys.exit(main())
