"""Worker start-up as a script sees it: a slow top level, and a loop of calls over batches."""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

from .. import tasks
from ..contenders import default_workers
from ..core import ChildContext, Job, Measurement
from .base import MapWorkload, Prepared, Workload, batched

# The script: its top level takes ``top`` seconds (as when a script loads its data), then a
# guarded main() times the first call on ``n`` tiny items, from creating the pool on.
_SCRIPT = """\
import sys, time

began = time.perf_counter()
while time.perf_counter() - began < {top!r}:
    pass


def main():
    from benchmarks import tasks
    from benchmarks.contenders import CONTENDERS
    from benchmarks.core import Job, Measurement

    factory = CONTENDERS[sys.argv[1]].load()
    items = list(range({n}))
    job = Job(tasks.double, items)
    start = time.perf_counter()
    session = factory("process", {workers})
    try:
        results = session.map(job)
        seconds = time.perf_counter() - start
    finally:
        session.close()
    print(Measurement(seconds, results == [tasks.double(x) for x in items]).to_line(), flush=True)


if __name__ == "__main__":
    main()
"""


class ScriptWorkload(Workload):
    def measure(self, ctx: ChildContext) -> Measurement:
        source = _SCRIPT.format(
            top=float(ctx.params["top"]), n=int(ctx.params["n"]), workers=default_workers()
        )
        with tempfile.TemporaryDirectory(prefix="fastparallel-bench-") as folder:
            script = Path(folder) / "slow_top_level.py"
            script.write_text(source)
            done = subprocess.run(
                [sys.executable, str(script), ctx.contender.name],
                cwd=folder,
                capture_output=True,
                text=True,
                timeout=300,
                check=False,
            )
        found = Measurement.from_output(done.stdout)
        if found is None:
            tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
            found = Measurement(
                None, False, f"exit {done.returncode}, no result: {' | '.join(tail)}"
            )
        return found


SCRIPT = ScriptWorkload(
    name="script",
    title="A script with a slow top level",
    description=(
        "A script file whose top level takes 0.3 s (as when it loads its data) and whose guarded "
        "`main()` maps `x * 2` over 20k integers on processes; the first call is timed inside the "
        "script, from creating the pool on. A start method that imports the script's `__main__` in "
        "its workers or server (forkserver, spawn) runs the top level again."
    ),
    modes=("process",),
    variants={"20k": {"n": 20_000, "top": 0.3}},
    quick={"2k": {"n": 2_000, "top": 0.05}},
    serial="the top level runs once in every script; only worker start-up differs",
    contenders=(
        "fastparallel",
        "mp_pool_fork",
        "mp_pool_forkserver",
        "futures_forkserver",
        "joblib",
    ),
)


def _batches(ctx: ChildContext) -> Prepared:
    loops = ctx.loops(float(ctx.params["ms"]))
    items = list(range(int(ctx.params["batches"]) * int(ctx.params["batch"])))
    tail = tasks.spin(loops)
    jobs = [
        Job(tasks.burn, batch, {"loops": loops})
        for batch in batched(items, int(ctx.params["batch"]))
    ]
    expected = [seed * 1_000_003 + tail for seed in items]
    return Prepared(jobs, check=lambda results: results == expected)


BATCHES = MapWorkload(
    name="batches",
    title="A loop of calls over small batches",
    description=(
        "40 batches of 128 CPU-bound items of about 0.25 ms, one map call per batch, cold (the "
        "loop is timed from a fresh interpreter): what a training or data-loading loop does."
    ),
    modes=("process",),
    variants={"40x128x0.25ms": {"batches": 40, "batch": 128, "ms": 0.25}},
    quick={"4x16x0.25ms": {"batches": 4, "batch": 16, "ms": 0.25}},
    prepare=_batches,
)
