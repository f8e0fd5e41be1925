"""Many tiny tasks: the per-item and pool-start overheads, cold and warm, and progress bars."""

from __future__ import annotations

from .. import tasks
from ..core import ChildContext, Job
from .base import MapWorkload, Prepared, single

TINY_SIZES = {"20k": {"n": 20_000}, "100k": {"n": 100_000}}
TINY_QUICK = {"2k": {"n": 2_000}}


def _tiny(ctx: ChildContext) -> Prepared:
    items = list(range(int(ctx.params["n"])))
    job = Job(tasks.double, items, progress=bool(ctx.params.get("progress", False)))
    return single(job, [tasks.double(x) for x in items])


TINY_COLD = MapWorkload(
    name="tiny_cold",
    title="Many tiny tasks, cold",
    description=(
        "`x * 2` over 20k and 100k integers. The timed region is the first call in a fresh "
        "interpreter, so it includes starting the pool."
    ),
    modes=("process", "thread"),
    variants=TINY_SIZES,
    quick=TINY_QUICK,
    prepare=_tiny,
)

TINY_WARM = MapWorkload(
    name="tiny_warm",
    title="Many tiny tasks, warm",
    description=(
        "The same tasks, but an untimed first call starts the pool and the second call is timed. "
        "Contenders with an explicit pool object keep it open between the two calls."
    ),
    modes=("process", "thread"),
    variants=TINY_SIZES,
    quick=TINY_QUICK,
    warm=True,
    prepare=_tiny,
)

PROGRESS = MapWorkload(
    name="progress",
    title="Progress bar overhead",
    description=(
        "100k tiny tasks on a warm process pool with the progress bar off and on. The bar is "
        "written to a pipe, not a terminal. Each contender is compared with itself."
    ),
    modes=("process",),
    variants={"off": {"n": 100_000, "progress": False}, "on": {"n": 100_000, "progress": True}},
    quick={"off": {"n": 2_000, "progress": False}, "on": {"n": 2_000, "progress": True}},
    serial="the serial loop has no progress bar",
    contenders=("fastparallel", "fastcore", "mpire", "tqdm"),
    warm=True,
    prepare=_tiny,
)
