"""Throughput of ``parallel(..., executor=client)`` on a local Dask cluster, per task size.

Run: ``python -m benchmarks.dask_throughput`` (needs the ``dask`` extra). It starts a
``LocalCluster`` of 2 single-threaded worker processes on 127.0.0.1 and compares, for
tasks of 0, 1, 10 and 100 ms of pure-Python work:

* ``parallel(fn, items, executor=client)`` (chunked, one task per chunk);
* one ``client.submit`` per item (what a plain Dask loop does);
* ``parallel(fn, items, n_workers=2)`` on the local process pool, for reference.

It prints a Markdown table of items per second (median of ``--reps`` runs).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable


def busy(seconds: float) -> float:
    """Hold the CPU for ``seconds`` (pure Python: the GIL is never released)."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass
    return seconds


def _rate(run: Callable[[], object], n: int, reps: int) -> float:
    times = []
    for _ in range(reps):
        began = time.perf_counter()
        run()
        times.append(time.perf_counter() - began)
    return n / statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--budget", type=float, default=2.0, help="seconds of serial work per row")
    args = parser.parse_args()

    from distributed import Client, LocalCluster

    from fastparallel import parallel

    with (
        LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
        ) as cluster,
        Client(cluster) as client,
    ):
        parallel(busy, [0.0] * 10, executor=client)
        parallel(busy, [0.0] * 10, n_workers=2)
        print(
            "| task | items | parallel(executor=client) | client.submit per item | local processes |"
        )
        print("| --- | --- | --- | --- | --- |")
        for seconds in (0.0, 0.001, 0.01, 0.1):
            n = 20_000 if seconds == 0 else max(8, int(args.budget / seconds))
            items = [seconds] * n
            n_submit = min(n, 2_000)
            dask_rate = _rate(
                lambda items=items: parallel(busy, items, executor=client), n, args.reps
            )
            submit_rate = _rate(
                lambda items=items[:n_submit]: client.gather(
                    [client.submit(busy, s, pure=False) for s in items]
                ),
                n_submit,
                args.reps,
            )
            local_rate = _rate(lambda items=items: parallel(busy, items, n_workers=2), n, args.reps)
            print(
                f"| {seconds * 1000:g} ms | {n:,} | {dask_rate:,.0f}/s | {submit_rate:,.0f}/s | {local_rate:,.0f}/s |"
            )


if __name__ == "__main__":
    main()
