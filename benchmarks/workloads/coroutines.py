"""Coroutines on an event loop: many awaits, a bounded number in flight."""

from __future__ import annotations

from .. import tasks
from ..core import ChildContext, Job
from .base import MapWorkload, Prepared, single


def _naps(ctx: ChildContext) -> Prepared:
    # Code that defines coroutines has imported asyncio already: its import is not charged
    # to the first contender that would otherwise import it inside the timed region.
    import asyncio  # noqa: F401

    items = list(range(int(ctx.params["n"])))
    return single(Job(tasks.nap, items, {"delay": float(ctx.params["ms"]) / 1000}), items)


COROUTINES = MapWorkload(
    name="coroutines",
    title="Coroutines on an event loop",
    description=(
        "1,000 coroutines that each `await asyncio.sleep(0.02)`, 100 in flight. The ideal is "
        "1000 / 100 * 20 ms = 0.2 s. fastparallel's `parallel` runs them on an event loop in a "
        "helper thread; the others on the loop of `asyncio.run`."
    ),
    modes=("async",),
    variants={"1000x20ms": {"n": 1000, "ms": 20, "workers": 100}},
    quick={"100x5ms": {"n": 100, "ms": 5, "workers": 20}},
    serial="it would take 1000 * 20 ms = 20 s; the ideal 0.2 s is the reference",
    contenders=("fastparallel", "fastparallel_async", "fastcore", "asyncio"),
    prepare=_naps,
)
