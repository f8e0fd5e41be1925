"""Large pickle buffers in shared memory: written once by the sender, taken by the receiver.

Pickle protocol 5 hands large buffers (NumPy arrays, and anything whose ``__reduce_ex__``
returns :class:`pickle.PickleBuffer`) to a callback instead of copying them into the
pickle (see :func:`fastparallel.serialize.pickling.dumps`). Each such buffer is copied once into its
own piece of shared memory, whose file descriptor travels with the message
(:class:`.channel.Channel`). The receiver closes the descriptor at once, after mapping
the memory (from ``MAP_BYTES``: the object is rebuilt on the mapping, without another
copy) or copying a smaller buffer out (cheaper than a mapping at that size).

The memory has no name: a ``memfd`` on Linux, elsewhere a POSIX shared-memory object
unlinked the moment it is created. Nothing is left behind whatever happens to either
process: once every descriptor and mapping is gone, the kernel frees it.

Each buffer has its own memory and mapping, released when the last object using it is
garbage-collected (not when its message is). Mappings are private (copy-on-write): the
objects rebuilt on them are ordinary, writable and independent. A worker that modifies
a bound argument (the same memory goes to every worker) affects no other process, and
neither does a process forked later that writes to an array it inherited. The price:
the first write to each page copies it.
"""

from __future__ import annotations

import contextlib
import mmap
import os

TYPE_CHECKING = False  # worker processes import this module: no typing at run time
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Any

__all__ = ["MAP_BYTES", "available", "close_all", "prepare_mapping", "receive", "share"]

_MEMFD = hasattr(os, "memfd_create")
# From this size on the receiver maps a buffer rather than copy it out: below it, a copy
# (preadv) costs less than mmap, munmap and the page faults (benchmarks/shm_threshold.py).
MAP_BYTES = 1 << 20


def available() -> bool:
    """Whether buffers can travel by shared memory here (else they stay in the pickle)."""
    if not hasattr(mmap, "MAP_PRIVATE"):
        return False
    if _MEMFD:
        return True
    import importlib.util

    return importlib.util.find_spec("_posixshmem") is not None


def _new_memory() -> int:
    """A descriptor of new, empty shared memory that no other process can open by name."""
    if _MEMFD:
        return os.memfd_create("fastparallel", os.MFD_CLOEXEC)
    import importlib
    import secrets

    posixshmem = importlib.import_module("_posixshmem")  # what multiprocessing.shared_memory uses

    while True:
        name = f"/fp{secrets.token_hex(8)}"  # short: macOS allows 31 characters
        try:
            fd: int = posixshmem.shm_open(name, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
        except FileExistsError:
            continue
        posixshmem.shm_unlink(name)  # from now on only descriptors and mappings keep it
        return fd


def _fill(fd: int, data: memoryview) -> None:
    size = data.nbytes
    if _MEMFD:  # the kernel copies straight into the memory's pages: no mapping, no faults here
        done = 0
        while done < size:
            done += os.pwrite(fd, data[done:], done)
        return
    os.ftruncate(fd, size)  # POSIX shared memory may refuse write(): go through a mapping
    with mmap.mmap(fd, size) as memory:
        memory[:] = data


def share(buffers: Sequence[Any]) -> list[int]:
    """Copy each buffer (a ``PickleBuffer``) into its own shared memory; their descriptors.

    The caller closes them once sent. On failure (out of memory or descriptors) nothing
    stays open and the ``OSError`` propagates: the message can travel in band instead.
    """
    fds: list[int] = []
    try:
        for buffer in buffers:
            fds.append(_new_memory())
            with buffer.raw() as data:
                _fill(fds[-1], data)
    except BaseException:
        close_all(fds)
        raise
    return fds


def close_all(fds: Sequence[int]) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)


_libc: Any = None
_Region: Any = None
_MAP_FAILED: int | None = -1


def prepare_mapping() -> None:
    """Load what mapping needs: ctypes, because ``mmap.mmap`` would keep a duplicate
    descriptor open for as long as the mapping lives (before Python 3.13): one per array
    a caller keeps."""
    global _libc, _Region, _MAP_FAILED
    import ctypes
    import sys

    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = (
        ctypes.c_void_p,
        ctypes.c_size_t,
        ctypes.c_int,
        ctypes.c_int,
        ctypes.c_int,
        ctypes.c_long,
    )
    libc.munmap.restype = ctypes.c_int
    libc.munmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t)

    class Region(ctypes.c_ubyte * min(1 << 46, sys.maxsize)):  # type: ignore[misc]
        """Exports a mapping's memory; unmaps it once nothing uses it (every view of it keeps
        it alive, however it was sliced or cast)."""

        def __del__(self) -> None:
            size = self.__dict__.get("size")
            if size:
                libc.munmap(ctypes.addressof(self), size)

    _libc, _Region, _MAP_FAILED = libc, Region, ctypes.c_void_p(-1).value


def _map(fd: int, size: int) -> memoryview:
    address = _libc.mmap(None, size, mmap.PROT_READ | mmap.PROT_WRITE, mmap.MAP_PRIVATE, fd, 0)
    if address is None or address == _MAP_FAILED:
        import ctypes

        errno = ctypes.get_errno()
        raise OSError(errno, f"fastparallel: could not map shared memory: {os.strerror(errno)}")
    region = _Region.from_address(address)
    region.size = size
    return memoryview(region).cast("B")[:size]


def _copy(fd: int, size: int) -> memoryview:
    view = memoryview(bytearray(size))
    done = 0
    while done < size:
        count = os.preadv(fd, [view[done:]], done)
        if count <= 0:
            raise OSError(f"fastparallel: shared memory ended after {done} of {size} bytes")
        done += count
    return view


def receive(fds: Sequence[int], sizes: Sequence[int]) -> list[memoryview]:
    """The memory of each descriptor (``sizes`` bytes of it) as a writable buffer of its
    own; closes every descriptor.

    A large buffer is mapped (copy-on-write): nothing is copied, and pages the receiver
    never reads are never touched. A smaller one is copied out, which costs less than
    mapping it (and leaves no mapping behind). From a descriptor that can be neither (or
    without its size) the buffers stop: the pickle that needs them then fails to load,
    which the receiver reports like any unpickling error.
    """
    views: list[memoryview] = []
    try:
        for fd, size in zip(fds, sizes, strict=False):  # fewer sizes: see above
            if size >= MAP_BYTES:
                if _libc is None:
                    prepare_mapping()
                try:
                    views.append(_map(fd, size))
                    continue
                except OSError:  # out of mappings (vm.max_map_count) or address space: copy it
                    pass
            views.append(_copy(fd, size))
    except OSError:
        pass
    finally:
        close_all(fds)
    return views
