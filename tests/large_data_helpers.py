"""Helpers for tests/test_large_data.py: what workers run, and how to see shared memory.

Workers import this module by name (tests/ is on ``sys.path`` under pytest and on
``PYTHONPATH`` in subprocess scripts). NumPy is imported inside the functions that need it.
"""

from __future__ import annotations

import gc
import os
import pickle
import re
from pathlib import Path
from typing import Any

MIB = 1 << 20
_MAPPING = re.compile(r"^([0-9a-f]+)-([0-9a-f]+) \S+ \S+ \S+ \S+\s*(.*)$")
_MEMFD = re.compile(r"^/memfd:fastparallel(?: \(deleted\))?$")


# -- seeing shared memory ----------------------------------------------------------------------


def mappings() -> list[tuple[int, int, str]]:
    """This process's mappings: start and end address, and what is mapped."""
    out = []
    for line in Path("/proc/self/maps").read_text().splitlines():
        match = _MAPPING.match(line)
        if match:
            out.append((int(match[1], 16), int(match[2], 16), match[3]))
    return out


def shared_mappings() -> list[tuple[int, int]]:
    """The address ranges of this process's mappings of fastparallel's buffer memory."""
    return [(start, end) for start, end, path in mappings() if _MEMFD.match(path)]


def mapping_of(array: Any) -> str | None:
    """What is mapped where ``array``'s data lies."""
    address = array.__array_interface__["data"][0]
    return next((path for start, end, path in mappings() if start <= address < end), None)


def in_shared_memory(array: Any) -> bool:
    """Whether ``array``'s data lies in a mapping of fastparallel's buffer memory."""
    return bool(_MEMFD.match(mapping_of(array) or ""))


def buffer_fds() -> list[str]:
    """Descriptors of this process that point at fastparallel's buffer memory."""
    links = []
    for name in os.listdir("/proc/self/fd"):
        try:
            link = os.readlink(f"/proc/self/fd/{name}")
        except OSError:
            continue
        if _MEMFD.match(link):
            links.append(link)
    return links


def fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


def leftovers() -> dict[str, Any]:
    """What of fastparallel's buffer memory this process still holds, after a collection."""
    gc.collect()
    return {"mappings": len(shared_mappings()), "fds": len(buffer_fds())}


def shmem_kib() -> int:
    """The system's shared memory in use (``Shmem`` in /proc/meminfo), in KiB."""
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("Shmem:"):
            return int(line.split()[1])
    raise AssertionError("no Shmem line in /proc/meminfo")


def dev_shm() -> list[str]:
    """The entries of /dev/shm that fastparallel may make (named POSIX shared memory, where
    there is no memfd: ``fp`` and 16 hex digits). /dev/shm is the machine's: other programs'
    entries (multiprocessing's ``sem.mp-*``, joblib's) come and go while a test runs."""
    return sorted(n for n in os.listdir("/dev/shm") if re.fullmatch(r"fp[0-9a-f]{16}", n))


# -- what workers run ----------------------------------------------------------------------------


def full(seed: int, mib: float = 4, dtype: str = "f8") -> Any:
    """An array of ``mib`` MiB filled with ``seed``."""
    import numpy as np

    itemsize = np.dtype(dtype).itemsize
    return np.full(int(mib * MIB) // itemsize, seed, dtype=dtype)


def full_and_where(seed: int, mib: float = 4) -> tuple[Any, bool]:
    return full(seed, mib), True


def look(item: Any) -> dict[str, Any]:
    """What a worker sees of an array item: where it lives, whether it may write it, its sum."""
    return {
        "shared": in_shared_memory(item),
        "writeable": bool(item.flags.writeable),
        "sum": float(item.sum()),
        "dtype": item.dtype.str,
        "shape": item.shape,
    }


def look_at_bound(array: Any, item: int) -> dict[str, Any]:
    """Writes ``-1`` at ``array[item]`` (a bound argument), then reports what this worker sees."""
    array[item] = -1
    return {
        "pid": os.getpid(),
        "negative": [int(i) for i in (array < 0).nonzero()[0]],
        "shared": in_shared_memory(array),
        "writeable": bool(array.flags.writeable),
    }


def echo(x: Any) -> Any:
    return x


def fail_on(x: int, target: int, mib: float = 1) -> Any:
    if x == target:
        raise ValueError(f"item {x} fails")
    return full(x, mib)


def exit_on(x: int, target: int, mib: float = 1) -> Any:
    if x == target:
        os._exit(7)
    return full(x, mib)


def die_after_passing(x: int, how: str, mib: float = 2) -> Any:
    """Returns a large array, having arranged for this worker to die while sending it:
    right after passing the descriptors ('fds'), or halfway through the frame ('frame')."""
    from fastparallel.backends.processes.wire import channel

    original = channel.Channel._pass

    def pass_then_die(self: Any, fds: Any, sizes: Any) -> None:
        original(self, fds, sizes)
        if how == "frame":
            os.write(self.fd, (1 << 20 | len(fds) << 48).to_bytes(8, "little") + b"\x04partial")
        os._exit(9)

    channel.Channel._pass = pass_then_die  # type: ignore[method-assign]
    return full(x, mib)


class Blob:
    """Hands pickle its bytes as a PickleBuffer (the way NumPy does)."""

    def __init__(self, data: Any):
        self.data = data

    def __reduce_ex__(self, protocol: Any) -> Any:
        return Blob._rebuild, (pickle.PickleBuffer(self.data),)

    @staticmethod
    def _rebuild(buffer: Any) -> Blob:
        return Blob(buffer)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Blob) and bytes(self.data) == bytes(other.data)


def make_blob(seed: int, mib: float = 2) -> Blob:
    return Blob(bytearray([seed % 256]) * int(mib * MIB))


def blob_info(blob: Blob) -> dict[str, Any]:
    view = memoryview(blob.data)
    return {"size": view.nbytes, "first": view[0], "writeable": not view.readonly}


def make_bytes(seed: int, size: int, mutable: bool) -> bytes | bytearray:
    data = bytes([seed % 256]) * size
    return bytearray(data) if mutable else data


def mark_then_block(item: Any, marks: str, arg: Any, seconds: float = 60.0) -> None:
    """Write a mark saying whether ``item`` and the bound ``arg`` lie in shared memory, then
    block (to be killed)."""
    import json
    import time

    path = Path(marks) / f"item-{os.getpid()}-{time.monotonic_ns()}"
    shared = in_shared_memory(item) and in_shared_memory(arg)
    path.with_suffix(".tmp").write_text(json.dumps({"pid": os.getpid(), "shared": shared}))
    path.with_suffix(".tmp").rename(path)
    time.sleep(seconds)


def read_marks(marks: str) -> list[dict[str, Any]]:
    import json

    return [
        json.loads(p.read_text())
        for p in Path(marks).iterdir()
        if p.name.startswith("item-") and not p.suffix
    ]
