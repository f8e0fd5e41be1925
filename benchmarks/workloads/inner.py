"""Native thread pools inside process workers: NumPy matrix products, with and without
fastparallel's limit on each worker's BLAS threads (``inner_threads``), and joblib, which
limits them too."""

from __future__ import annotations

from .. import tasks
from ..core import ChildContext, Job
from .base import MapWorkload, Prepared, single


def _matmul(ctx: ChildContext) -> Prepared:
    size = int(ctx.params["size"])
    seeds = list(range(int(ctx.params["n"])))
    expected = [tasks.matmul(seed, size) for seed in seeds[:2]]

    def check(results: list[float]) -> bool:
        # BLAS sums in an order that depends on its threads: equal to a few ulps
        return len(results) == len(seeds) and all(
            abs(got - want) <= 1e-9 * abs(want)
            for got, want in zip(results, expected, strict=False)
        )

    prepared = single(Job(tasks.matmul, seeds, {"size": size}), [])
    return Prepared(prepared.batches, check)


INNER = MapWorkload(
    name="inner",
    title="NumPy matrix products on process workers (inner threads)",
    description=(
        "32 products of two random 1000x1000 matrices, one per item, on one worker process per "
        "core, cold. Each worker's BLAS pool is limited to its share of the cores by default "
        "(fastparallel, joblib); fastparallel with inner_threads=os.cpu_count() shows what "
        "happens without the limit: every worker's pool as large as the machine."
    ),
    modes=("process",),
    variants={"32x1000": {"n": 32, "size": 1000}},
    quick={"4x200": {"n": 4, "size": 200}},
    contenders=("serial", "fastparallel", "fastparallel_oversubscribed", "joblib"),
    prepare=_matmul,
)
