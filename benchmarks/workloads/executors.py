"""Executors: many single ``submit()`` calls, results collected, on a warm executor."""

from __future__ import annotations

import time
from typing import Any

from .. import tasks
from ..contenders import default_workers
from ..core import ChildContext, Measurement
from .base import Workload

SUBMIT_SIZES = {"10k": {"n": 10_000}}
SUBMIT_QUICK = {"500": {"n": 500}}


def _executor(name: str, n_workers: int) -> Any:
    """The executor that contender ``name`` offers (each one's own idiom)."""
    if name == "fastparallel":
        from fastparallel import Executor

        return Executor(n_workers)
    if name == "loky":
        from loky import get_reusable_executor

        return get_reusable_executor(max_workers=n_workers)
    from concurrent.futures import ProcessPoolExecutor

    return ProcessPoolExecutor(n_workers)


class SubmitWorkload(Workload):
    """``[pool.submit(fn, x) for x in items]``, then every ``result()``; the executor is
    started by an untimed first round (a warm executor, as a service keeps one)."""

    def measure(self, ctx: ChildContext) -> Measurement:
        n = int(ctx.params["n"])
        n_workers = int(ctx.params.get("workers") or default_workers())
        executor = _executor(ctx.contender.name, n_workers)
        try:
            warmup = [executor.submit(tasks.double, x) for x in range(4 * n_workers)]
            [future.result() for future in warmup]
            start = time.perf_counter()
            futures = [executor.submit(tasks.double, x) for x in range(n)]
            results = [future.result() for future in futures]
            seconds = time.perf_counter() - start
        finally:
            executor.shutdown()
        return Measurement(seconds=seconds, correct=results == [x * 2 for x in range(n)])


SUBMIT = SubmitWorkload(
    name="submit",
    title="Executors: 10,000 submit() calls",
    description=(
        "`pool.submit(fn, x)` for 10,000 integers, one call each (`fn` is `x * 2`), then every "
        "`result()`: the cost of one future's round trip to a worker process, on an executor "
        "warmed by an untimed first round. fastparallel is `fastparallel.Executor`, "
        "concurrent.futures its `ProcessPoolExecutor`, loky its `get_reusable_executor()`."
    ),
    modes=("process",),
    variants=SUBMIT_SIZES,
    quick=SUBMIT_QUICK,
    serial="submit() is an executor's call: the serial loop has none",
    contenders=("fastparallel", "futures", "loky"),
    warm=True,
)
