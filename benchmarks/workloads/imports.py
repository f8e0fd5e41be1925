"""Import time: what ``import <library>`` adds to a fresh interpreter's start."""

from __future__ import annotations

import statistics
import subprocess
import sys

from ..contenders import Contender
from ..core import ChildContext, Measurement, Params
from .base import Workload

_SNIPPET = "import time; t = time.perf_counter(); {stmt}; print(repr(time.perf_counter() - t))"


def time_import(stmt: str) -> float:
    """Seconds ``stmt`` takes in a brand-new interpreter (interpreter start not included)."""
    done = subprocess.run(
        [sys.executable, "-c", _SNIPPET.format(stmt=stmt)],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    return float(done.stdout.strip().splitlines()[-1])


class ImportWorkload(Workload):
    def skip_reason(self, contender: Contender, mode: str, params: Params) -> str | None:
        return None if contender.import_stmt else "nothing separate to import"

    def measure(self, ctx: ChildContext) -> Measurement:
        stmt = ctx.contender.import_stmt
        samples = [time_import(stmt) for _ in range(int(ctx.params["repeat"]))]
        return Measurement(
            seconds=statistics.median(samples), correct=True, extra={"samples": samples}
        )


IMPORT = ImportWorkload(
    name="import",
    title="Import time",
    description=(
        "`perf_counter()` around the import statement in a brand-new interpreter, which is what "
        "the import adds to interpreter start; the median of 7 interpreters per repetition."
    ),
    modes=("none",),
    variants={"fresh": {"repeat": 7}},
    quick={"fresh": {"repeat": 1}},
    serial="nothing to import",
)
