"""CPU-bound pure-Python tasks, and how they scale with the number of workers."""

from __future__ import annotations

from .. import tasks
from ..contenders import default_workers
from ..core import ChildContext, Job, Params
from .base import MapWorkload, Prepared, single


def _burn(ctx: ChildContext) -> Prepared:
    loops = ctx.loops(float(ctx.params["ms"]))
    items = list(range(int(ctx.params["n"])))
    tail = tasks.spin(loops)
    expected = [seed * 1_000_003 + tail for seed in items]
    return single(Job(tasks.burn, items, {"loops": loops}), expected)


CPU = MapWorkload(
    name="cpu",
    title="CPU-bound tasks",
    description=(
        "16 and 40 pure-Python tasks of about 60 ms each (the loop count is calibrated once by "
        "the runner), one worker per core, cold."
    ),
    modes=("process",),
    variants={"16x60ms": {"n": 16, "ms": 60}, "40x60ms": {"n": 40, "ms": 60}},
    quick={"4x5ms": {"n": 4, "ms": 5}},
    prepare=_burn,
)


def _worker_counts() -> list[int]:
    cores = default_workers()
    counts = [1]
    while counts[-1] * 2 < cores:
        counts.append(counts[-1] * 2)
    if cores > 1:
        counts.append(cores)
    return counts


def _scaling_variants(n: int, ms: float, counts: list[int]) -> dict[str, Params]:
    return {f"{w}w": {"n": n, "ms": ms, "workers": w} for w in counts}


SCALING = MapWorkload(
    name="scaling",
    title="Scaling with workers",
    description=(
        "16 CPU-bound tasks of about 60 ms on a warm pool of 1, 2, 4, ... workers up to the number "
        "of cores. Parallel efficiency is T1 / (n * Tn)."
    ),
    modes=("process",),
    variants=_scaling_variants(16, 60, _worker_counts()),
    quick=_scaling_variants(4, 5, _worker_counts()[:2]),
    serial="T1 is each contender's own one-worker run",
    contenders=("fastparallel", "mp_pool_fork"),
    warm=True,
    efficiency=True,
    prepare=_burn,
)
