"""Measures one case in this (fresh) interpreter and prints the result as JSON on stdout.

Usage: ``python -m benchmarks._one --workload W --size S --mode M --contender C [--quick]``.
The runner starts one of these per measurement; the last stdout line starting with
``BENCH_RESULT`` carries the :class:`~benchmarks.core.Measurement`.
"""

from __future__ import annotations

import argparse
import sys
import traceback
import warnings

from .contenders import CONTENDERS
from .core import ChildContext, Measurement
from .workloads import WORKLOADS


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks._one", description=__doc__)
    parser.add_argument("--workload", required=True, choices=sorted(WORKLOADS))
    parser.add_argument("--size", required=True, help="variant name, e.g. 20k")
    parser.add_argument(
        "--mode", required=True, choices=["process", "thread", "async", "serial", "none"]
    )
    parser.add_argument("--contender", required=True, choices=sorted(CONTENDERS))
    parser.add_argument("--quick", action="store_true", help="look the size up among quick sizes")
    parser.add_argument("--loops-per-ms", type=float, default=None, help="spin() loops per ms")
    return parser.parse_args(argv)


def measure(args: argparse.Namespace) -> Measurement:
    workload = WORKLOADS[args.workload]
    sizes = workload.sizes(args.quick)
    if args.size not in sizes:
        return Measurement(None, False, f"unknown size {args.size!r}; known: {', '.join(sizes)}")
    loops_per_ms = args.loops_per_ms
    if loops_per_ms is None:
        from .calibrate import loops_per_ms as calibrate

        loops_per_ms = calibrate()
    ctx = ChildContext(CONTENDERS[args.contender], args.mode, sizes[args.size], loops_per_ms)
    return workload.measure(ctx)


def main(argv: list[str] | None = None) -> int:
    warnings.simplefilter("ignore")
    args = parse_args(argv)
    try:
        result = measure(args)
    except Exception as exc:  # reported, not raised: the runner records the failure
        traceback.print_exc()
        result = Measurement(None, False, f"{type(exc).__name__}: {exc}")
    sys.stdout.flush()
    print(result.to_line(), flush=True)
    return 0 if result.correct else 1


if __name__ == "__main__":
    sys.exit(main())
