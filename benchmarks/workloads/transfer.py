"""Moving data: a large argument bound to the function, and large results coming back."""

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


def _arrays(ctx: ChildContext) -> Prepared:
    mb = float(ctx.params["mb"])
    items = list(range(int(ctx.params["n"])))
    length = int(mb * 2**20) // 8

    def check(arrays: list[Any]) -> bool:
        return len(arrays) == len(items) and all(
            a.shape == (length,) and a[0] == seed and a[-1] == seed for seed, a in zip(items, arrays, strict=True)
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
