"""What the worker processes of tests/test_memory.py run (at module level, imported by name).

Items count themselves in and out of a file under an exclusive lock, so that the test
sees how many ran at once without any sleep; an item that must die bumps the fake
OOM-kill counter the caller reads, then SIGKILLs itself.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
from collections.abc import Iterator
from pathlib import Path

PAGE = 4096


@contextlib.contextmanager
def _locked(folder: str) -> Iterator[Path]:
    counter = Path(folder, "running")
    with open(Path(folder, "lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield counter
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _count(folder: str, index: int, change: int) -> None:
    """Count an item in (+1) or out (-1); on the way in, log how many run with it."""
    with _locked(folder) as counter:
        running = int(counter.read_text() or 0) if counter.exists() else 0
        counter.write_text(str(running + change))
        if change > 0:
            with open(Path(folder, "log"), "a") as log:
                log.write(f"{index} {running + 1}\n")


def hold(folder: str, nbytes: int, index: int) -> tuple[int, int]:
    """Take ``nbytes`` of memory, every page touched, while counted as running."""
    _count(folder, index, +1)
    block = bytearray(nbytes)
    block[::PAGE] = b"\x01" * len(range(0, nbytes, PAGE))
    _count(folder, index, -1)
    del block
    return index, os.getpid()


def oom_once(folder: str, vmstat: str, victim: int, index: int, times: int = 1) -> int:
    """Item ``victim`` is "killed by the OOM killer" on its first ``times`` attempts: the
    machine's OOM-kill count (a fake /proc/vmstat) grows, then the worker gets SIGKILL."""
    if index == victim:
        attempts = Path(folder, "attempts")
        with _locked(folder):
            made = int(attempts.read_text()) if attempts.exists() else 0
            attempts.write_text(str(made + 1))
        if made < times:
            with _locked(folder):
                text = Path(vmstat).read_text()
                count = int(text.split("oom_kill ")[1])
                Path(vmstat).write_text(f"oom_kill {count + 1}\n")
            os.kill(os.getpid(), signal.SIGKILL)
    return index


def plain_kill(victim: int, index: int) -> int:
    """Item ``victim`` dies of SIGKILL with no OOM kill counted anywhere."""
    if index == victim:
        os.kill(os.getpid(), signal.SIGKILL)
    return index


def concurrency(folder: str) -> dict[int, int]:
    """Item index -> how many items ran when it started (itself included)."""
    lines = Path(folder, "log").read_text().split()
    return {int(i): int(n) for i, n in zip(lines[::2], lines[1::2], strict=True)}


def take(nbytes: int, _item: int) -> int:
    """Take ``nbytes``, every page touched, and give it back."""
    block = bytearray(nbytes)
    block[::PAGE] = b"\x01" * len(range(0, nbytes, PAGE))
    return len(block)
