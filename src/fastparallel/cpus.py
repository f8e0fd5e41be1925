"""How many CPUs this process may use, and how many workers a call gets by default."""

from __future__ import annotations

import math
import os
from functools import lru_cache

__all__ = ["default_workers", "num_cpus", "set_enclosing_pool_size"]

_enclosing_pool_size = 0


def set_enclosing_pool_size(n_workers: int) -> None:
    """Called in a fastparallel worker process: this process is one of ``n_workers``.

    Nested process pools started from such a worker then share the machine with its
    siblings instead of multiplying (n workers x n workers).
    """
    global _enclosing_pool_size
    _enclosing_pool_size = n_workers


def _cgroup_cpu_limit() -> float | None:
    """The CPU quota of this process's cgroup (v2, then v1), or None where there is none."""
    try:
        with open("/sys/fs/cgroup/cpu.max") as f:
            quota, period = f.read().split()[:2]
        if quota != "max":
            return int(quota) / int(period)
        return None
    except (OSError, ValueError):
        pass
    try:
        with open("/sys/fs/cgroup/cpu/cpu.cfs_quota_us") as f:
            quota_us = int(f.read())
        with open("/sys/fs/cgroup/cpu/cpu.cfs_period_us") as f:
            period_us = int(f.read())
        if quota_us > 0 and period_us > 0:
            return quota_us / period_us
    except (OSError, ValueError):
        pass
    return None


@lru_cache(maxsize=1)
def num_cpus() -> int:
    """The number of CPUs this process may use.

    Takes the smallest of the machine's CPU count, the process's CPU affinity and the
    cgroup CPU quota (containers, CI runners, Kubernetes limits).

    Example:
        >>> from fastparallel import num_cpus
        >>> num_cpus() >= 1
        True
    """
    count = os.cpu_count() or 1
    if hasattr(os, "sched_getaffinity"):
        try:  # noqa: SIM105 - no contextlib in worker processes (its import costs every start)
            count = min(count, len(os.sched_getaffinity(0)))
        except OSError:  # pragma: no cover
            pass
    limit = _cgroup_cpu_limit()
    if limit is not None:
        count = min(count, max(1, math.ceil(limit)))
    return max(1, count)


def default_workers(threadpool: bool) -> int:
    """Workers for ``n_workers=None``.

    Processes: the CPUs this process may use, shared out among the workers of an
    enclosing fastparallel pool when called from inside one. Threads: like the standard
    library, a few more than the CPUs (they mostly wait), at most 32.
    """
    cpus = num_cpus()
    if threadpool:
        return min(32, cpus + 4)
    if _enclosing_pool_size:
        return max(1, cpus // _enclosing_pool_size)
    return cpus
