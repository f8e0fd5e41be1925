"""The registry of workloads, in the order the runner runs and reports them."""

from __future__ import annotations

from .base import MapWorkload, Prepared, Workload
from .compute import CPU, SCALING
from .coroutines import COROUTINES
from .datasci import IMAGES, TREES
from .endtoend import END_TO_END
from .executors import SUBMIT
from .imports import IMPORT
from .inner import INNER
from .io import HTTP, SLEEP
from .startup import BATCHES, HEAVY_IMPORT, SCRIPT
from .tiny import PROGRESS, TINY_COLD, TINY_WARM
from .transfer import BIG_ARG, BIG_ITEM, BIG_RESULT, RESULT_SIZES

WORKLOADS: dict[str, Workload] = {
    w.name: w
    for w in [
        TINY_COLD,
        TINY_WARM,
        SCRIPT,
        HEAVY_IMPORT,
        END_TO_END,
        BATCHES,
        CPU,
        SLEEP,
        HTTP,
        COROUTINES,
        TREES,
        IMAGES,
        BIG_ARG,
        BIG_ITEM,
        BIG_RESULT,
        RESULT_SIZES,
        SCALING,
        INNER,
        IMPORT,
        PROGRESS,
        SUBMIT,
    ]
}

__all__ = ["WORKLOADS", "MapWorkload", "Prepared", "Workload"]
