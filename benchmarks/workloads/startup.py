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


def run_script(script: Path, contender: str, folder: str) -> Measurement:
    """Run a benchmark script (it prints its own measurement) for ``contender``."""
    done = subprocess.run(
        [sys.executable, str(script), contender],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    found = Measurement.from_output(done.stdout)
    if found is None:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        found = Measurement(None, False, f"exit {done.returncode}, no result: {' | '.join(tail)}")
    return found


class ScriptWorkload(Workload):
    def measure(self, ctx: ChildContext) -> Measurement:
        source = _SCRIPT.format(
            top=float(ctx.params["top"]), n=int(ctx.params["n"]), workers=default_workers()
        )
        with tempfile.TemporaryDirectory(prefix="fastparallel-bench-") as folder:
            script = Path(folder) / "slow_top_level.py"
            script.write_text(source)
            return run_script(script, ctx.contender.name, folder)


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


# A library that takes ``import_s`` seconds of CPU to import (as fastai, torch or
# scikit-learn do), and a function of it that takes ``ms`` of CPU per item.
# Both spin on the thread's CPU clock, not the wall clock: an import costs CPU, so workers
# importing it at once on 2 cores take twice as long (a wall-clock spin would let four
# imports share the cores for free, as four sleeps would).
_HEAVY_MODULE = """\
import time

began = time.thread_time()
while time.thread_time() - began < {import_s!r}:
    pass


def work(x):
    began = time.thread_time()
    while time.thread_time() - began < {ms!r} / 1000:
        pass
    return x * 2
"""

# The script imports numpy at its top level (as most do); main() imports the heavy library
# and maps its function over processes: the first call is timed, from creating the pool on.
# With ``thread``, a Python thread of the script's runs meanwhile (fork is then unsafe).
_HEAVY_SCRIPT = """\
import sys, threading, time

try:
    import numpy  # noqa: F401
except ImportError:
    pass


def main():
    from benchmarks.contenders import CONTENDERS
    from benchmarks.core import Job, Measurement

    import heavy_library

    stop = threading.Event()
    if {thread!r}:
        threading.Thread(target=stop.wait, daemon=True).start()
    factory = CONTENDERS[sys.argv[1]].load()
    items = list(range({n}))
    start = time.perf_counter()
    session = factory("process", {workers})
    try:
        results = session.map(Job(heavy_library.work, items))
        seconds = time.perf_counter() - start
    finally:
        session.close()
        stop.set()
    print(Measurement(seconds, results == [x * 2 for x in items]).to_line(), flush=True)


if __name__ == "__main__":
    main()
"""


class HeavyImportWorkload(Workload):
    def measure(self, ctx: ChildContext) -> Measurement:
        params = ctx.params
        with tempfile.TemporaryDirectory(prefix="fastparallel-bench-") as folder:
            Path(folder, "heavy_library.py").write_text(
                _HEAVY_MODULE.format(import_s=float(params["import_s"]), ms=float(params["ms"]))
            )
            script = Path(folder) / "heavy_import.py"
            script.write_text(
                _HEAVY_SCRIPT.format(
                    thread=bool(params["thread"]),
                    n=int(params["n"]),
                    workers=int(params["workers"]),
                )
            )
            return run_script(script, ctx.contender.name, folder)


HEAVY_IMPORT = HeavyImportWorkload(
    name="heavy_import",
    title="A function from a library that takes 1 s to import",
    description=(
        "A script that imported numpy imports a library whose import takes 1 s of CPU, then maps "
        "its function (20 ms of CPU per item) over 100 items on 4 worker processes; the first "
        "call is timed, from creating the pool on. Workers that are forks of the script have the "
        "library already; a template that preloads it imports it once; forkserver and spawn "
        "workers each import it. `thread`: a Python thread of the script's runs during the call, "
        "so forking the script is unsafe (fastparallel then forks its preloading template)."
    ),
    modes=("process",),
    variants={
        "1s-import": {"import_s": 1.0, "ms": 20, "n": 100, "workers": 4, "thread": False},
        "1s-import-thread": {"import_s": 1.0, "ms": 20, "n": 100, "workers": 4, "thread": True},
    },
    quick={"0.2s-import": {"import_s": 0.2, "ms": 2, "n": 20, "workers": 2, "thread": False}},
    serial="every worker needs the library; the serial loop imported it once",
    contenders=(
        "fastparallel",
        "fastcore",
        "mp_pool_fork",
        "mp_pool_forkserver",
        "futures_forkserver",
    ),
)
