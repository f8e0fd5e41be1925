"""How many CPUs and how much memory this process may use, and how many workers a call
gets by default.

The count is the smallest of the machine's CPUs, the process's CPU affinity and the CPU
quota of the cgroups the process belongs to. A cgroup is read where the process's own
membership says it is (``/proc/self/cgroup``), not only at the root of the hierarchy:
under systemd and many container runtimes a process's cgroup is a folder deep below
``/sys/fs/cgroup``, and a limit set on any folder above it applies too, so every level
from the process's own up to the root is read and the tightest limit wins. Both cgroup
v2 (one unified hierarchy) and v1 (one hierarchy per controller) are read.

Memory is read the same way: what the machine has available (``MemAvailable``), and,
where lower, what the process's cgroups still allow (their limit minus their usage, at
each level). The readers of a process's resident memory (RSS) are here too, for the
``max_memory`` governor of process pools and for the workers that report their peaks.
"""

from __future__ import annotations

import math
import os
from functools import lru_cache

TYPE_CHECKING = False  # worker processes import this module: no typing at run time
if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = [
    "Cgroups",
    "available_memory",
    "default_workers",
    "mem_available",
    "num_cpus",
    "oom_kills",
    "peak_rss",
    "reset_peak_rss",
    "rss",
    "set_enclosing_pool_size",
]

# cgroup v1 says "no limit" with a huge number (a page-rounded 2**63 - 1): anything above this.
_NO_V1_LIMIT = 1 << 60

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
        self._dirs: dict[str, list[str]] = {}
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

    def dirs(self, controller: str) -> list[str]:
        """This process's cgroup folders for ``controller`` ("cpu", "memory"), its own
        first, then each one above it up to the root: v2's where the unified hierarchy
        has the controller's files, else v1's. (Read once: a memory budget is read at
        every call.)"""
        if controller not in self._dirs:
            self._dirs[controller] = list(self._find_dirs(controller))
        return self._dirs[controller]

    def _find_dirs(self, controller: str) -> Iterator[str]:
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

    def memory_free(self) -> int | None:
        """The bytes this process's cgroups still allow: the least, over every level from
        its own cgroup up, of the limit minus the usage (v2 ``memory.max`` and
        ``memory.current``, v1 ``memory.limit_in_bytes`` and ``memory.usage_in_bytes``);
        None where no level has a limit."""
        free = []
        for folder in self.dirs("memory"):
            limit = _read_int(folder, "memory.max", "memory.limit_in_bytes")
            if limit is None or limit >= _NO_V1_LIMIT:
                continue
            usage = _read_int(folder, "memory.current", "memory.usage_in_bytes") or 0
            free.append(max(0, limit - usage))
        return min(free, default=None)

    def oom_kills(self) -> int:
        """How many processes the OOM killer has killed in this process's cgroups, all
        levels together (v2 ``memory.events``, v1 ``memory.oom_control``: "oom_kill N")."""
        count = 0
        for folder in self.dirs("memory"):
            for name in ("memory.events", "memory.oom_control"):
                text = _read(os.path.join(folder, name))
                if text is not None:
                    count += _field(text, "oom_kill") or 0
                    break
        return count


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
    """The text of a small file of ``/proc`` or ``/sys``, stripped; None if unreadable.

    With ``os.read`` rather than ``open()``: a process pool reads ~10 of these per call
    (its memory budget, its workers' RSS), and a text file object costs ~10 us each.
    """
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    parts = []
    try:
        while True:
            part = os.read(fd, 65536)
            if not part:
                break
            parts.append(part)
    except OSError:
        return None
    finally:
        os.close(fd)
    return b"".join(parts).decode("utf-8", "replace").strip()


def _read_int(folder: str, *names: str) -> int | None:
    """The number in the first of the files ``names`` in ``folder`` that exists; None
    for none, or for "max" (cgroup v2's "no limit")."""
    for name in names:
        text = _read(os.path.join(folder, name))
        if text is not None:
            try:
                return int(text)
            except ValueError:
                return None
    return None


def _field(text: str, name: str) -> int | None:
    """The number after ``name`` on its line of ``text`` ("oom_kill 3", "MemAvailable:
    1024 kB"), None if absent."""
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 2 and fields[0].rstrip(":") == name:
            try:
                return int(fields[1])
            except ValueError:
                return None
    return None


def mem_available(meminfo: str = "/proc/meminfo") -> int | None:
    """The machine's ``MemAvailable`` in bytes (None where there is no ``/proc/meminfo``)."""
    text = _read(meminfo)
    kib = None if text is None else _field(text, "MemAvailable")
    return None if kib is None else kib * 1024


def available_memory(cgroups: Cgroups, meminfo: str = "/proc/meminfo") -> int | None:
    """The bytes this process may still take: ``MemAvailable``, or what its cgroups still
    allow where that is lower; None where neither can be read.

    Example:
        >>> available_memory(Cgroups("/nonexistent", "/nonexistent"), "/nonexistent") is None
        True
    """
    known = [n for n in (mem_available(meminfo), cgroups.memory_free()) if n is not None]
    return min(known, default=None)


def oom_kills(cgroups: Cgroups, vmstat: str = "/proc/vmstat") -> int:
    """A count that grows whenever the OOM killer kills a process this one could be
    affected by: the machine's (``/proc/vmstat``) plus its cgroups'."""
    text = _read(vmstat)
    machine = (None if text is None else _field(text, "oom_kill")) or 0
    return machine + cgroups.oom_kills()


_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def rss(pid: int) -> int | None:
    """Process ``pid``'s resident memory in bytes (its ``/proc/<pid>/statm``), read from
    outside it; None where it cannot be read (no ``/proc``, or it has ended)."""
    text = _read(f"/proc/{pid}/statm")
    try:
        return int(text.split()[1]) * _PAGE_SIZE if text else None
    except (ValueError, IndexError):
        return None


def peak_rss() -> int | None:
    """This process's peak resident memory in bytes since :func:`reset_peak_rss`
    (``VmHWM`` of ``/proc/self/status``); None without ``/proc``."""
    text = _read("/proc/self/status")
    kib = None if text is None else _field(text, "VmHWM")
    return None if kib is None else kib * 1024


def reset_peak_rss() -> None:
    """Start a new :func:`peak_rss` from the current RSS (``/proc/self/clear_refs``).
    Where that is refused the peak stays the lifetime's: an over-estimate, never less."""
    try:
        with open("/proc/self/clear_refs", "w") as file:
            file.write("5")
    except OSError:
        pass


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
