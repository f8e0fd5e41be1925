"""What the worker processes of tests/test_inner_threads.py run (imported by name)."""

from __future__ import annotations

import os


def matmul_threads(_item: int) -> dict[str, int]:
    """A 1000x1000 NumPy matrix product, then the thread count of every native pool
    loaded in this process (by threadpoolctl's internal API: openblas, mkl, openmp...)."""
    import numpy as np
    from threadpoolctl import threadpool_info

    a = np.ones((1000, 1000))
    a @ a
    return {info["internal_api"]: info["num_threads"] for info in threadpool_info()}


def environment(_item: int) -> dict[str, str]:
    return {name: os.environ.get(name, "") for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}


def native_threads_started(_item: int) -> tuple[int, dict[str, int]]:
    """The threads of this process that Python did not start (native pools' threads), and
    every native pool's thread count, with no BLAS call made here."""
    import threading

    started = len(os.listdir("/proc/self/task")) - threading.active_count()
    from threadpoolctl import threadpool_info

    return started, {info["internal_api"]: info["num_threads"] for info in threadpool_info()}
