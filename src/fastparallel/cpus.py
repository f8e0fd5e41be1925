"""How many CPUs this process may use, and how many workers a call gets by default.

The count is the smallest of the machine's CPUs, the process's CPU affinity and the CPU
quota of the cgroups the process belongs to. A cgroup is read where the process's own
membership says it is (``/proc/self/cgroup``), not only at the root of the hierarchy:
under systemd and many container runtimes a process's cgroup is a folder deep below
``/sys/fs/cgroup``, and a limit set on any folder above it applies too, so every level
from the process's own up to the root is read and the tightest limit wins. Both cgroup
v2 (one unified hierarchy) and v1 (one hierarchy per controller) are read.
"""

from __future__ import annotations

import math
import os
from functools import lru_cache

TYPE_CHECKING = False  # worker processes import this module: no typing at run time
if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = ["Cgroups", "default_workers", "num_cpus", "set_enclosing_pool_size"]

_enclosing_pool_size = 0


def set_enclosing_pool_size(n_workers: int) -> None:
    """Called in a fastparallel worker process: this process is one of ``n_workers``.

    Nested process pools started from such a worker then share the machine with its
    siblings instead of multiplying (n workers x n workers).
    """
    global _enclosing_pool_size
    _enclosing_pool_size = n_workers


class Cgroups:
    """The cgroups this process belongs to, read from ``proc`` (``/proc/self/cgroup``)
    and the hierarchy mounted at ``root`` (``/sys/fs/cgroup``); both are parameters so
    that a test can hand in a fake tree.

    Example:
        >>> Cgroups(root="/nonexistent", proc="/nonexistent").cpu_limit() is None
        True
    """

    def __init__(self, root: str = "/sys/fs/cgroup", proc: str = "/proc/self/cgroup"):
        self.root = root
        self.memberships: dict[str, str] = {}  # controller ("" for v2) -> path in its hierarchy
        try:
            with open(proc) as file:
                lines = file.read().splitlines()
        except OSError:
            lines = []
        for line in lines:
            _, _, rest = line.partition(":")
            controllers, _, path = rest.partition(":")
            for controller in controllers.split(",") if controllers else [""]:
                self.memberships[controller] = path

    def dirs(self, controller: str) -> Iterator[str]:
        """This process's cgroup folders for ``controller`` ("cpu", "memory"), its own
        first, then each one above it up to the root: v2's where the unified hierarchy
        has the controller's files, else v1's."""
        v2 = self.memberships.get("")
        if v2 is not None and os.path.exists(os.path.join(self.root, "cgroup.controllers")):
            yield from _up_from(self.root, v2)
            return
        path = self.memberships.get(controller)
        mount = self._v1_mount(controller)
        if path is not None and mount is not None:
            yield from _up_from(mount, path)

    def _v1_mount(self, controller: str) -> str | None:
        """Where cgroup v1 mounts ``controller``'s hierarchy: ``cpu``, or a folder named
        for the controllers it shares with (``cpu,cpuacct``)."""
        try:
            names = sorted(os.listdir(self.root))
        except OSError:
            return None
        for name in [controller, *(n for n in names if controller in n.split(","))]:
            if os.path.isdir(os.path.join(self.root, name)):
                return os.path.join(self.root, name)
        return None

    def cpu_limit(self) -> float | None:
        """The tightest CPU quota, in CPUs, over this process's cgroups; None if none."""
        limits = []
        for folder in self.dirs("cpu"):
            quota = _read_cpu_max(folder)
            if quota is None:
                quota = _read_cfs_quota(folder)
            if quota is not None:
                limits.append(quota)
        return min(limits, default=None)


def _up_from(base: str, path: str) -> Iterator[str]:
    """``base``/``path`` and each folder above it up to ``base``. A path that the mount
    does not have (the process sees the host's path, the mount is the container's own)
    is shortened from the left until it exists: at worst, ``base`` itself."""
    parts = [part for part in path.split("/") if part]
    while parts and not os.path.isdir(os.path.join(base, *parts)):
        parts = parts[1:]
    while parts:
        yield os.path.join(base, *parts)
        parts = parts[:-1]
    yield base


def _read(path: str) -> str | None:
    try:
        with open(path) as file:
            return file.read().strip()
    except OSError:
        return None


def _read_cpu_max(folder: str) -> float | None:
    """cgroup v2's ``cpu.max``: "max 100000" (no limit) or "200000 100000" (2 CPUs)."""
    text = _read(os.path.join(folder, "cpu.max"))
    fields = text.split() if text else []
    if len(fields) != 2 or fields[0] == "max":
        return None
    try:
        quota, period = int(fields[0]), int(fields[1])
    except ValueError:
        return None
    return quota / period if quota > 0 and period > 0 else None


def _read_cfs_quota(folder: str) -> float | None:
    """cgroup v1's ``cpu.cfs_quota_us`` over ``cpu.cfs_period_us`` (-1: no limit)."""
    quota, period = (_read(os.path.join(folder, f"cpu.cfs_{n}_us")) for n in ("quota", "period"))
    try:
        quota_us, period_us = int(quota or ""), int(period or "")
    except ValueError:
        return None
    return quota_us / period_us if quota_us > 0 and period_us > 0 else None


def count_cpus(cgroups: Cgroups) -> int:
    """The smallest of the machine's CPU count, this process's CPU affinity and the CPU
    quota of ``cgroups`` (rounded up: a quota of 1.5 CPUs keeps two busy)."""
    count = os.cpu_count() or 1
    if hasattr(os, "sched_getaffinity"):
        try:  # noqa: SIM105 - no contextlib in worker processes (its import costs every start)
            count = min(count, len(os.sched_getaffinity(0)))
        except OSError:  # pragma: no cover
            pass
    limit = cgroups.cpu_limit()
    if limit is not None:
        count = min(count, max(1, math.ceil(limit)))
    return max(1, count)


@lru_cache(maxsize=1)
def num_cpus() -> int:
    """The number of CPUs this process may use.

    Takes the smallest of the machine's CPU count, the process's CPU affinity and the
    CPU quota of its cgroups (containers, CI runners, Kubernetes limits, systemd
    slices), read from the process's own cgroup up to the root.

    Example:
        >>> from fastparallel import num_cpus
        >>> num_cpus() >= 1
        True
    """
    return count_cpus(Cgroups())


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
