"""What keeping ``max_memory`` costs when memory is plentiful (``python -m benchmarks.memory_overhead``).

A warm pool of two workers maps ``x + 1`` over 20,000 integers, alternately with the
memory budget kept (the default: ``max_memory=None`` reads what the machine has) and with
no budget at all (as where the available memory cannot be read), and prints the medians.
"""

from __future__ import annotations

import argparse
import statistics
import time

from fastparallel import parallel, shutdown
from fastparallel.backends.processes import pool


def plus_one(x: int) -> int:
    return x + 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=400, help="calls in all, alternating")
    parser.add_argument("--items", type=int, default=20_000)
    args = parser.parse_args()
    kept = pool.memory_budget

    def unknown(max_memory: int | None, held: int) -> None:
        return None

    times: dict[str, list[float]] = {"kept": [], "none": []}
    for budget in (unknown, kept):  # warm both ways first
        pool.memory_budget = budget
        parallel(plus_one, range(args.items), n_workers=2)
    for call in range(args.calls):
        label = "kept" if call % 2 else "none"
        pool.memory_budget = kept if label == "kept" else unknown
        began = time.perf_counter()
        parallel(plus_one, range(args.items), n_workers=2)
        times[label].append(time.perf_counter() - began)
    pool.memory_budget = kept
    shutdown()
    none, with_budget = (statistics.median(times[k]) for k in ("none", "kept"))
    print(
        f"{args.items:,} tiny items, warm pool of 2: no budget {none * 1e3:.2f} ms, "
        f"budget kept {with_budget * 1e3:.2f} ms ({(with_budget - none) * 1e3:+.2f} ms, "
        f"medians of {args.calls // 2} calls each)"
    )


if __name__ == "__main__":
    main()
