"""The performance targets fastparallel is held to, and their evaluation against results.

A target compares the median of one case with the median of another case (a ratio) or with a
fixed number of seconds. Nothing in the test suite asserts these; the runner reports them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .core import CaseKey


def fp(workload: str, variant: str, mode: str) -> CaseKey:
    return CaseKey(workload, variant, mode, "fastparallel")


@dataclass(frozen=True)
class Target:
    text: str
    measured: CaseKey
    against: CaseKey | float | None
    """Another case (ratio), a reference time in seconds (ratio), or None (absolute seconds)."""
    limit: float

    @property
    def absolute(self) -> bool:
        return self.against is None


TINY_COLD_P = fp("tiny_cold", "20k", "process")

TARGETS: list[Target] = [
    Target(
        "a function from a library that takes 1 s to import, first call: vs Pool (fork)",
        fp("heavy_import", "1s-import", "process"),
        CaseKey("heavy_import", "1s-import", "process", "mp_pool_fork"),
        1.3,
    ),
    Target(
        "the same while a thread of the caller's runs: vs Pool (forkserver)",
        fp("heavy_import", "1s-import-thread", "process"),
        CaseKey("heavy_import", "1s-import-thread", "process", "mp_pool_forkserver"),
        0.8,
    ),
    Target(
        "the same, first call: vs fastcore.parallel",
        fp("heavy_import", "1s-import", "process"),
        CaseKey("heavy_import", "1s-import", "process", "fastcore"),
        1.3,
    ),
    Target(
        "20k tiny items, processes, cold: vs fastcore.parallel",
        TINY_COLD_P,
        CaseKey("tiny_cold", "20k", "process", "fastcore"),
        0.1,
    ),
    Target(
        "20k tiny items, processes, cold: vs mpire",
        TINY_COLD_P,
        CaseKey("tiny_cold", "20k", "process", "mpire"),
        0.5,
    ),
    Target(
        "20k tiny items, processes, cold: vs joblib",
        TINY_COLD_P,
        CaseKey("tiny_cold", "20k", "process", "joblib"),
        0.5,
    ),
    Target(
        "20k tiny items, processes, cold: vs multiprocessing.Pool.map (fork)",
        TINY_COLD_P,
        CaseKey("tiny_cold", "20k", "process", "mp_pool_fork"),
        1.5,  # issue 20
    ),
    Target(
        "20k tiny items, processes, cold: vs multiprocessing.Pool.map (forkserver)",
        TINY_COLD_P,
        CaseKey("tiny_cold", "20k", "process", "mp_pool_forkserver"),
        0.5,
    ),
    Target(
        "20k tiny items, processes, cold: vs ProcessPoolExecutor.map (forkserver)",
        TINY_COLD_P,
        CaseKey("tiny_cold", "20k", "process", "futures_forkserver"),
        0.5,
    ),
    Target(
        "Script with a 0.3 s top level, 20k tiny items: vs multiprocessing.Pool.map (fork)",
        fp("script", "20k", "process"),
        CaseKey("script", "20k", "process", "mp_pool_fork"),
        1.5,  # issue 20
    ),
    Target(
        "Script with a 0.3 s top level, 20k tiny items: vs multiprocessing.Pool.map (forkserver)",
        fp("script", "20k", "process"),
        CaseKey("script", "20k", "process", "mp_pool_forkserver"),
        0.25,
    ),
    Target(
        "A whole script (python script.py), 20k tiny items: vs multiprocessing.Pool.map (fork)",
        fp("endtoend", "20k", "process"),
        CaseKey("endtoend", "20k", "process", "mp_pool_fork"),
        2.0,
    ),
    Target(
        "A whole script (python script.py), 20k tiny items: vs multiprocessing.Pool.map (forkserver)",
        fp("endtoend", "20k", "process"),
        CaseKey("endtoend", "20k", "process", "mp_pool_forkserver"),
        1.0,
    ),
    Target(
        "40 batches of 128 items of 0.25 ms, one call per batch, cold: vs serial",
        fp("batches", "40x128x0.25ms", "process"),
        CaseKey("batches", "40x128x0.25ms", "serial", "serial"),
        0.65,
    ),
    Target(
        "threadpool='auto', 16 CPU-bound tasks of 60 ms: vs processes chosen by hand",
        CaseKey("cpu", "16x60ms", "process", "fastparallel_auto"),
        fp("cpu", "16x60ms", "process"),
        1.3,
    ),
    # auto sees items wait after two of them, one after the other: 40 ms of a 160 ms job.
    Target(
        "threadpool='auto', 256 sleeps of 20 ms: vs threads chosen by hand",
        CaseKey("sleep", "256x20ms", "thread", "fastparallel_auto"),
        fp("sleep", "256x20ms", "thread"),
        1.4,
    ),
    Target(
        "threadpool='auto', 40 batches of 128 items of 0.25 ms, one call per batch: vs serial",
        CaseKey("batches", "40x128x0.25ms", "process", "fastparallel_auto"),
        CaseKey("batches", "40x128x0.25ms", "serial", "serial"),
        0.8,
    ),
    Target(
        "100k tiny items, warm pool: vs warm multiprocessing.Pool.map (fork)",
        fp("tiny_warm", "100k", "process"),
        CaseKey("tiny_warm", "100k", "process", "mp_pool_fork"),
        1.5,
    ),
    Target(
        "20k tiny items, threads: vs ThreadPoolExecutor.map",
        fp("tiny_cold", "20k", "thread"),
        CaseKey("tiny_cold", "20k", "thread", "futures"),
        0.1,
    ),
    Target(
        "16 CPU-bound tasks of 60 ms on 2 processes: vs serial",
        fp("cpu", "16x60ms", "process"),
        CaseKey("cpu", "16x60ms", "serial", "serial"),
        0.6,
    ),
    Target(
        "16 CPU-bound tasks of 60 ms on 2 processes: vs mpire",
        fp("cpu", "16x60ms", "process"),
        CaseKey("cpu", "16x60ms", "process", "mpire"),
        1.0,
    ),
    Target(
        "Trees in batches of 128, processes: vs fastcore.parallel",
        fp("trees", "256x60k", "process"),
        CaseKey("trees", "256x60k", "process", "fastcore"),
        0.35,
    ),
    Target(
        "Trees in batches of 128, processes: vs serial",
        fp("trees", "256x60k", "process"),
        CaseKey("trees", "256x60k", "serial", "serial"),
        0.65,
    ),
    Target(
        "JPEGs in batches of 128, processes: vs fastcore.parallel",
        fp("images", "4096x128px", "process"),
        CaseKey("images", "4096x128px", "process", "fastcore"),
        0.35,
    ),
    Target(
        "JPEGs in batches of 128, processes: vs serial",
        fp("images", "4096x128px", "process"),
        CaseKey("images", "4096x128px", "serial", "serial"),
        0.65,
    ),
    Target(
        "20 MB bound argument: vs the same run with a tiny argument",
        fp("bigarg", "20MB", "process"),
        fp("bigarg", "tiny", "process"),
        2.0,
    ),
    Target(
        "20 MB array as the item of each of 16 tasks: vs the same run with 16-byte items",
        fp("bigitem", "20MB", "process"),
        fp("bigitem", "tiny", "process"),
        2.0,
    ),
    Target(
        "64 results of 4 MB, warm pool: vs the serial loop that makes them",
        fp("bigresult", "64x4MB", "process"),
        CaseKey("bigresult", "64x4MB", "serial", "serial"),
        1.5,
    ),
    Target(
        "64 results of 4 MB, warm pool: vs multiprocessing.Pool.map (fork)",
        fp("bigresult", "64x4MB", "process"),
        CaseKey("bigresult", "64x4MB", "process", "mp_pool_fork"),
        0.35,
    ),
    Target(
        "256 waits of 20 ms on 32 threads: vs the ideal 0.16 s",
        fp("sleep", "256x20ms", "thread"),
        0.16,
        1.2,
    ),
    Target(
        "1,000 coroutines awaiting 20 ms, 100 in flight: vs the ideal 0.2 s",
        fp("coroutines", "1000x20ms", "async"),
        0.2,
        1.3,
    ),
    Target(
        "from fastparallel import parallel: seconds added to interpreter start",
        fp("import", "fresh", "none"),
        None,
        0.030,
    ),
    Target(
        "progress=True on 100k tiny items: vs progress off",
        fp("progress", "on", "process"),
        fp("progress", "off", "process"),
        1.05,
    ),
]


def evaluate(target: Target, medians: Mapping[CaseKey, float]) -> dict[str, Any]:
    """The measured value (a ratio, or seconds for absolute targets) and pass/fail/missing."""
    value: float | None = medians.get(target.measured)
    if value is not None and isinstance(target.against, CaseKey):
        base = medians.get(target.against)
        value = value / base if base else None
    elif value is not None and isinstance(target.against, float):
        value = value / target.against
    status = "missing" if value is None else ("pass" if value <= target.limit else "fail")
    return {
        "target": target.text,
        "measured_case": str(target.measured),
        "against": str(target.against) if target.against is not None else None,
        "value": value,
        "limit": target.limit,
        "unit": "s" if target.absolute else "x",
        "status": status,
    }


def format_value(value: float | None, unit: str, digits: int = 3) -> str:
    if value is None:
        return "n/a"
    return f"{value * 1000:.{digits - 2}f} ms" if unit == "s" else f"{value:#.{digits}g}x"


def format_pair(value: float | None, limit: float, unit: str) -> tuple[str, str]:
    """Value and limit, with enough digits that a failing value never looks equal to its limit."""
    digits = 3
    while value is not None and value != limit and digits < 8:
        if format_value(value, unit, digits) != format_value(limit, unit, digits):
            break
        digits += 1
    return format_value(value, unit, digits), format_value(limit, unit, 3)
