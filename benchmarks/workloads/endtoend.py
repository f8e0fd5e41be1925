"""A whole script as its user times it: ``python script.py``, from interpreter start to exit.

The other start-up workloads time the first call inside a process that has already started
and imported everything. A user runs a script: interpreter start, ``import``, the call, and
the interpreter's exit (which may wait for worker processes) all count. Every contender
runs the same script, written the way its documentation shows, with ``fn`` defined in the
script's ``__main__``.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from ..core import ChildContext, Measurement
from .base import Workload

# What each contender's script imports, and its call, as the libraries' docs show them.
# ProcessPoolExecutor.map sends one item per task by default; its docs advise a larger
# chunksize for long iterables: the one Pool.map picks itself, n / (4 * workers).
CALLS: dict[str, tuple[str, str]] = {
    "serial": ("", "results = [double(x) for x in items]"),
    "fastparallel": ("from fastparallel import parallel", "results = parallel(double, items)"),
    "mp_pool_fork": (
        "from multiprocessing import get_context",
        "with get_context('fork').Pool() as pool:\n        results = pool.map(double, items)",
    ),
    "mp_pool_forkserver": (
        "from multiprocessing import get_context",
        "with get_context('forkserver').Pool() as pool:\n        results = pool.map(double, items)",
    ),
    "futures_forkserver": (
        "import os\nfrom concurrent.futures import ProcessPoolExecutor\nfrom multiprocessing import get_context",
        (
            "chunksize = max(1, len(items) // (4 * os.cpu_count()))\n"
            "    with ProcessPoolExecutor(mp_context=get_context('forkserver')) as executor:\n"
            "        results = list(executor.map(double, items, chunksize=chunksize))"
        ),
    ),
}

_SCRIPT = """\
{imports}
import time

began = time.perf_counter()
while time.perf_counter() - began < {top!r}:  # the script's own top level: loading its data
    pass


def double(x):
    return 2 * x


if __name__ == "__main__":
    items = range({n})
    {call}
    print(len(results), sum(results))
"""


def script_source(contender: str, n: int, top: float) -> str:
    """The script that ``contender`` runs: ``n`` items, a top level that takes ``top`` seconds."""
    imports, call = CALLS[contender]
    return _SCRIPT.format(imports=imports, call=call, n=n, top=top)


def run_script(
    path: Path, env: dict[str, str] | None = None
) -> tuple[float, subprocess.CompletedProcess[str]]:
    """Runs ``python path`` as a shell does (waiting for the process, not for its output's
    end of file); returns the wall time and what it printed."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        start = time.perf_counter()
        process = subprocess.Popen(
            [sys.executable, str(path)], cwd=path.parent, stdout=out, stderr=err, env=env
        )
        # wait() without a timeout blocks in waitpid and returns at the exit; with one, it
        # polls with sleeps of up to 50 ms, which would round the times up to those steps.
        watchdog = threading.Timer(300, process.kill)
        watchdog.start()
        try:
            code = process.wait()
        finally:
            watchdog.cancel()
        seconds = time.perf_counter() - start
        out.seek(0)
        err.seek(0)
        return seconds, subprocess.CompletedProcess(process.args, code, out.read(), err.read())


def expected_output(n: int) -> str:
    return f"{n} {n * (n - 1)}\n"


class EndToEndWorkload(Workload):
    def measure(self, ctx: ChildContext) -> Measurement:
        n, top = int(ctx.params["n"]), float(ctx.params["top"])
        with tempfile.TemporaryDirectory(prefix="fastparallel-bench-") as folder:
            script = Path(folder) / "script.py"
            script.write_text(script_source(ctx.contender.name, n, top))
            seconds, done = run_script(script)
        correct = done.returncode == 0 and done.stdout == expected_output(n) and not done.stderr
        error = (
            None
            if correct
            else f"exit {done.returncode}: {(done.stderr or done.stdout).strip()[-300:]}"
        )
        return Measurement(seconds, correct, error)


END_TO_END = EndToEndWorkload(
    name="endtoend",
    title="A whole script, end to end",
    description=(
        "The wall time of `python script.py`, from interpreter start to exit, for a script that "
        "defines `double(x)` in its `__main__` and maps it over `range(20000)` on processes under "
        "an `if __name__ == '__main__':` guard, with a top level that takes 0 s or 0.3 s. Each "
        "library is used as its docs show: `parallel(double, items)`; `with get_context(m).Pool() "
        "as pool: pool.map(double, items)`; `ProcessPoolExecutor(mp_context=...).map` with "
        "chunksize n / (4 x workers), Pool.map's own choice. Timed as a shell does: until the "
        "process exits. The serial loop is the same script without workers."
    ),
    modes=("process",),
    variants={"20k": {"n": 20_000, "top": 0.0}, "20k-top0.3s": {"n": 20_000, "top": 0.3}},
    quick={"2k": {"n": 2_000, "top": 0.0}},
    contenders=tuple(CALLS),
)
