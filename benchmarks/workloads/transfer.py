"""Moving data: a large argument bound to the function, large items, and large results coming back."""

from __future__ import annotations

from typing import Any

from .. import tasks
from ..core import ChildContext, Job
from .base import MapWorkload, Prepared, single


def _blob(ctx: ChildContext) -> Prepared:
    import numpy as np

    size = max(16, int(float(ctx.params["mb"]) * 2**20))
    blob = (np.arange(size) % 251).astype(np.uint8)
    loops = ctx.loops(float(ctx.params["ms"]))
    items = list(range(int(ctx.params["n"])))
    tail = tasks.spin(loops)
    expected = [seed * 1_000_003 + tail + int(blob[seed % size]) for seed in items]
    return single(Job(tasks.use_blob, items, {"blob": blob, "loops": loops}), expected)


BIG_ARG = MapWorkload(
    name="bigarg",
    title="A 20 MB bound argument",
    description=(
        "64 tasks of about 5 ms on a warm process pool, with a 20 MB numpy array bound to the "
        "function as a keyword argument, against the same run with a 16-byte array."
    ),
    modes=("process",),
    variants={
        "tiny": {"n": 64, "ms": 5, "mb": 0},
        "20MB": {"n": 64, "ms": 5, "mb": 20},
    },
    quick={"tiny": {"n": 8, "ms": 1, "mb": 0}, "2MB": {"n": 8, "ms": 1, "mb": 2}},
    warm=True,
    prepare=_blob,
)


def _items(ctx: ChildContext) -> Prepared:
    import numpy as np

    size = max(16, int(float(ctx.params["mb"]) * 2**20))
    seeds = list(range(int(ctx.params["n"])))
    items = [np.full(size, seed, dtype=np.uint8) for seed in seeds]  # distinct: no pickle memo
    loops = ctx.loops(float(ctx.params["ms"]))
    expected = [tasks.burn(seed, loops) + seed for seed in seeds]
    return single(Job(tasks.use_item, items, {"loops": loops}), expected)


BIG_ITEM = MapWorkload(
    name="bigitem",
    title="20 MB items",
    description=(
        "16 tasks of about 5 ms on a warm process pool, each given a 20 MB numpy array as its "
        "item, against the same run with 16-byte arrays."
    ),
    modes=("process",),
    variants={
        "tiny": {"n": 16, "ms": 5, "mb": 0},
        "20MB": {"n": 16, "ms": 5, "mb": 20},
    },
    quick={"tiny": {"n": 4, "ms": 1, "mb": 0}, "2MB": {"n": 4, "ms": 1, "mb": 2}},
    warm=True,
    prepare=_items,
)


def _arrays(ctx: ChildContext) -> Prepared:
    mb = float(ctx.params["mb"])
    items = list(range(int(ctx.params["n"])))
    length = int(mb * 2**20) // 8

    def check(arrays: list[Any]) -> bool:
        return len(arrays) == len(items) and all(
            a.shape == (length,) and a[0] == seed and a[-1] == seed
            for seed, a in zip(items, arrays, strict=True)
        )

    return Prepared([Job(tasks.make_array, items, {"mb": mb})], check)


BIG_RESULT = MapWorkload(
    name="bigresult",
    title="Large results",
    description="64 tasks that each return a 4 MB float64 numpy array, on a warm process pool.",
    modes=("process",),
    variants={"64x4MB": {"n": 64, "mb": 4}},
    quick={"8x1MB": {"n": 8, "mb": 1}},
    warm=True,
    prepare=_arrays,
)


def memcpy_bytes_per_second() -> float:
    """This machine's memcpy bandwidth: the best of a few copies of 64 MiB between warm buffers."""
    import time

    import numpy as np

    source, target = np.ones(2**23), np.empty(2**23)
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        np.copyto(target, source)
        best = min(best, time.perf_counter() - start)
    return source.nbytes / best


def _sized_arrays(ctx: ChildContext) -> Prepared:
    prepared = _arrays(ctx)
    prepared.extra["memcpy_bytes_per_second"] = memcpy_bytes_per_second()
    return prepared


_SWEEP_KB = (1, 16, 256, 1024, 4096, 16384, 65536)

RESULT_SIZES = MapWorkload(
    name="resultsize",
    title="Time per result against result size",
    description=(
        "16 tasks that each return a float64 numpy array of 1 KB to 64 MB, on a warm process pool; "
        "plotted as time per result, with the time one memcpy of a result takes on this machine."
    ),
    modes=("process",),
    variants={
        (f"{kb}KB" if kb < 1024 else f"{kb // 1024}MB"): {"n": 16, "mb": kb / 1024}
        for kb in _SWEEP_KB
    },
    quick={"1KB": {"n": 4, "mb": 1 / 1024}, "1MB": {"n": 4, "mb": 1}},
    contenders=("serial", "fastparallel", "mp_pool_fork", "mpire", "joblib"),
    warm=True,
    sweep="mb",
    prepare=_sized_arrays,
)
