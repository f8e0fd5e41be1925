"""Keeping the items that run at once within a memory budget (``max_memory``).

A process pool measures how much memory an item needs and runs only as many items at
once as fit in the budget: ``max_memory``, or, when None, what the machine has
available (``MemAvailable``, or what the process's cgroups still allow where that is
lower) plus what the pool's workers already hold.

Two measurements feed it. Each worker reports, with every finished chunk, its resident
memory (RSS) when the chunk started and its peak while it ran (the kernel's high-water
mark, reset at the chunk's start), so that a short spike is seen too. And the caller
reads the RSS of the busy workers (``/proc/<pid>/statm``) when it is about to start
another item (at most every 50 ms), so that long items are measured while they run. An item's need is the
most any item grew its worker by; a worker between items holds the most any worker held
at a chunk's start. ``k`` items fit when ``n_workers * idle + k * need <= budget``.

Until the first chunk has reported, each worker holds one chunk at a time (none waits in its
pipe behind the running one, where it would start without asking); afterwards, chunks
queue in workers again only while all of them may run at once.

A worker that the OOM killer killed (it died of SIGKILL, and the kernel's OOM-kill count
rose since the pool last looked, or, where the budget is the machine's, the busy workers
were near it) is reported as out of memory, and fewer items run at once from then on.
"""

from __future__ import annotations

import signal

from fastparallel import cpus, logs
from fastparallel.errors import bytes_text

TYPE_CHECKING = False
if TYPE_CHECKING:
    from fastparallel.backends.base import Measured

__all__ = ["MemoryGovernor", "memory_budget", "watch_oom_kills"]

# Where the limits are read: a test hands in a fake tree (cgroup root, /proc/self/cgroup,
# /proc/meminfo, /proc/vmstat).
SOURCES = ("/sys/fs/cgroup", "/proc/self/cgroup", "/proc/meminfo", "/proc/vmstat")
# The caller reads the busy workers' RSS at most this often (seconds): it matters for
# long items, and costs ~10 us a worker.
_SAMPLE_SECONDS = 0.05
# A SIGKILL with the busy workers this near the budget counts as out of memory, even
# where the kernel's OOM-kill counters cannot be read.
_NEAR_BUDGET = 0.9


_cgroups_read: dict[tuple[str, ...], cpus.Cgroups] = {}  # a process's cgroups stay where they are
_oom_kills_seen: dict[tuple[str, ...], int] = {}  # the OOM-kill count at the last look


def _cgroups() -> cpus.Cgroups:
    if SOURCES not in _cgroups_read:
        _cgroups_read[SOURCES] = cpus.Cgroups(root=SOURCES[0], proc=SOURCES[1])
    return _cgroups_read[SOURCES]


def _oom_kills_rose() -> bool:
    """Whether the kernel counted OOM kills since the last look (the first look, when
    a pool starts, only takes the count: reading it costs ~0.2 ms, so not every call)."""
    count = cpus.oom_kills(_cgroups(), SOURCES[3])
    seen = _oom_kills_seen.get(SOURCES, count)
    _oom_kills_seen[SOURCES] = count
    return count > seen


def watch_oom_kills() -> None:
    """Take the kernel's OOM-kill count, if not taken yet: later deaths compare with it."""
    if SOURCES not in _oom_kills_seen:
        _oom_kills_rose()


def memory_budget(max_memory: int | None, held: int) -> int | None:
    """The bytes the workers of one call may use together: ``max_memory``, or what is
    available now plus ``held``, what the pool's workers already hold (None where it
    cannot be read: no limit)."""
    if max_memory is not None:
        return max_memory
    available = cpus.available_memory(_cgroups(), SOURCES[2])
    return None if available is None else available + held


class MemoryGovernor:
    """How many of one call's items may run at once within ``budget`` bytes."""

    def __init__(self, budget: int, n_workers: int, machine: bool = True):
        self.budget = budget
        # The budget is what the machine allows (max_memory=None): then being near it
        # when a worker gets SIGKILL means the OOM killer, even where no counter says so.
        self.machine = machine
        self.n_workers = n_workers
        self.need = 0  # bytes an item adds to its worker's RSS: the most seen
        self.idle = 0  # a worker's RSS between items: the most seen
        self.measured = False  # a chunk reported its peak
        self.allowed = n_workers  # items that may run at once
        self.cap = n_workers  # lowered when a worker was killed for memory
        self.busy_rss = 0  # the busy workers' RSS, as last read
        self._said = n_workers  # the count last logged
        self._remembered: Measured | None = None
        self._next_sample = 0.0  # time.monotonic() of the next read of the busy workers
        self._sent = 0  # chunks sent
        watch_oom_kills()

    def remember(self, measured: Measured | None) -> None:
        """Start from what a warm pool measured for the same call before (and write this
        call's measurements back there): a loop of calls over batches does not hold
        its chunks back again while it measures."""
        self._remembered = measured
        if measured is not None and measured.rss_need >= 0:
            self.measured = True
            self.idle = measured.rss_idle
            self.need = measured.rss_need
            self._decide()

    @property
    def queues(self) -> bool:
        """Whether a chunk may wait in a busy worker's pipe (it then starts without
        asking): only once measured, and while every worker may run an item."""
        return self.measured and self.allowed >= self.n_workers

    def chunk_done(self, start_rss: int, peak_rss: int) -> None:
        """A worker reports a finished chunk: its RSS at the start, and its peak."""
        if peak_rss <= 0:
            return  # the worker could not read its memory
        self.measured = True
        self.idle = max(self.idle, start_rss)
        self.need = max(self.need, peak_rss - start_rss)
        if self._remembered is not None:
            self._remembered.rss_idle = self.idle
            self._remembered.rss_need = self.need
        self._decide()

    @property
    def ample(self) -> bool:
        """Whether every worker could run an item four times as large as measured: then
        chunks go out without being held, and only one in eight is measured."""
        return self.measured and 4 * self.n_workers * (self.idle + self.need) <= self.budget

    def measure_next(self) -> bool:
        """Whether the next chunk sent reports its memory: every one, except one in eight
        while memory is :attr:`ample` (measuring costs a worker ~30 us a chunk)."""
        self._sent += 1
        return not self.ample or self._sent % 8 == 1

    def sample_due(self, now: float) -> bool:
        """Whether to read the busy workers' RSS now (not more often than every 50 ms)."""
        if now < self._next_sample:
            return False
        self._next_sample = now + _SAMPLE_SECONDS
        return True

    def running(self, samples: list[tuple[int, int]]) -> None:
        """The busy workers' RSS read now: ``(RSS before its item, RSS now)`` each."""
        if not samples:
            return
        self.busy_rss = sum(now for _, now in samples)
        grown = max(now - before for before, now in samples)
        if grown > self.need:  # an item still running: a measurement, but not a complete one
            self.need = grown
            self._decide()

    def killed_for_memory(self, exitcode: int | None) -> bool:
        """Whether a worker that died with ``exitcode`` was killed for lack of memory;
        if so, one fewer item runs at once from now on (at least one)."""
        if exitcode != -getattr(signal, "SIGKILL", 9):
            return False
        near = self.machine and self.busy_rss >= _NEAR_BUDGET * self.budget
        if not _oom_kills_rose() and not near:
            return False
        self.cap = max(1, min(self.cap, self.allowed) - 1)
        self._decide()
        return True

    def _decide(self) -> None:
        room = self.budget - self.n_workers * self.idle
        # Items measured to add nothing all fit, unless the idle workers alone exceed the
        # budget (an allocator that keeps freed memory, as 3.13t's mimalloc does, makes an
        # item that reuses it look free: measured so, it still must not run beside the rest).
        fits = self.n_workers if room >= 0 else 0
        if self.need > 0:
            fits = room // self.need
        self.allowed = max(1, min(self.n_workers, self.cap, fits))
        if self.allowed != self._said:
            self._said = self.allowed
            logs.info(
                "memory: %s per item, running %d at a time",
                bytes_text(self.need),
                self.allowed,
            )
