"""Whether this process may fork now: the facts checked before workers fork the caller.

:func:`unsafe_reason` answers with the reason fork is unsafe, or ``""``. The rule
(``docs/workers.md``, "When workers fork your program"):

* a Python thread other than the calling one makes it unsafe, unless it is known to be
  fork-safe: fastparallel's own idle threads (they mark themselves, see
  :func:`fastparallel.worker_state.mark_fork_safe`) and the I/O threads of an IPython/Jupyter kernel (they hold
  no lock a worker needs: ipykernel's output streams detect a forked child and
  forward its output, which is how ``multiprocessing`` on fork works in notebooks);
* an OpenMP runtime (libgomp, libiomp, LLVM's libomp) with threads started makes it
  unsafe: a fork's first parallel region waits forever for threads it does not have.
  A native thread belongs to the runtime when the address it waits at, or a return
  address near the top of its stack, lies in that library's code;
* a library known to break under fork while it is active: gRPC without its fork
  support, CUDA once initialised (torch);
* native threads of other libraries do not: OpenBLAS (which numpy starts at import)
  re-creates its threads after a fork, as do pools that handle fork themselves.

The template process runs the same check after it imports modules for a call: a
module whose import started unsafe threads there would make its forks unsafe too.
"""

from __future__ import annotations

import os
import struct
import sys
import threading
import time

from fastparallel.worker_state import FORK_SAFE

__all__ = ["unsafe_reason"]

_OPENMP = (("libgomp", "libgomp"), ("libiomp", "libiomp"), ("libomp", "LLVM libomp"))
# Threads started by these packages serve an IPython/Jupyter kernel's I/O.
_KERNEL_PACKAGES = frozenset({"ipykernel", "IPython", "zmq", "jupyter_client", "comm"})
_KERNEL_NATIVE_NAMES = ("ZMQbg/",)  # libzmq's own I/O and reaper threads
_STACK_BYTES = 2048  # how much of a waiting thread's stack is searched for return addresses
_PATIENCE_SECONDS = 0.25  # how long to wait for running native threads to wait (see below)
_PATIENCE_STEP = 0.005
_WORDS = struct.Struct(f"<{_STACK_BYTES // 8}Q")

# The executable mappings of OpenMP runtimes, read from /proc/self/maps again only when
# the number of imported modules changed (libraries are loaded by imports).
_openmp_cache: tuple[int, list[tuple[int, int, str]]] = (-1, [])


def unsafe_reason() -> str:
    """Why forking this process now is unsafe, in a few words; ``""`` when it is safe.

    Cheap enough for every pool start: tens of microseconds to list this process's
    threads. Where native threads run beside a loaded OpenMP runtime, it also reads two
    small files per native thread, and ``/proc/self/maps`` once per set of imported
    modules (~4 ms in a process that imported PyTorch, mostly the kernel's).

    Example:
        >>> isinstance(unsafe_reason(), str)  # "" here, unless threads run
        True
    """
    reason = _library_reason()
    if reason:
        return reason
    known: set[int | None] = set()
    current = threading.current_thread()
    for thread in threading.enumerate():
        known.add(thread.native_id)
        if thread is not current:
            reason = _thread_reason(thread)
            if reason:
                return reason
    return _native_reason(known)


def _library_reason() -> str:
    modules = sys.modules
    if "grpc" in modules and os.environ.get("GRPC_ENABLE_FORK_SUPPORT", "").lower() not in (
        "1",
        "true",
    ):
        return "gRPC is loaded without its fork support (GRPC_ENABLE_FORK_SUPPORT)"
    cuda = modules.get("torch.cuda")
    try:
        if cuda is not None and cuda.is_initialized():
            return "CUDA is initialised (torch)"
    except Exception:  # pragma: no cover - an unusual torch
        pass
    return ""


def _thread_reason(thread: threading.Thread) -> str:
    check = getattr(thread, FORK_SAFE, None)
    if check is not None:
        return "" if check() else f"a thread of fastparallel is busy ({thread.name!r})"
    target = getattr(thread, "_target", None)
    for owner in (type(thread), target):
        module = getattr(owner, "__module__", None) or ""
        if module.partition(".")[0] in _KERNEL_PACKAGES:
            return ""
    return f"a Python thread is running ({thread.name!r})"


def _native_reason(known: set[int | None]) -> str:
    try:
        tasks = os.listdir("/proc/self/task")
    except OSError:
        return ""  # no /proc: only Python threads can be seen
    unknown = [tid for tid in tasks if int(tid) not in known]
    if not unknown:
        return ""
    libraries = _openmp_code()
    if not libraries:
        return ""  # native threads of libraries that handle fork (OpenBLAS) or need nothing
    try:
        memory = os.open("/proc/self/mem", os.O_RDONLY)
    except OSError:
        memory = -1
    try:
        return _openmp_reason(unknown, libraries, memory)
    finally:
        if memory >= 0:
            os.close(memory)


def _openmp_reason(unknown: list[str], libraries: list[tuple[int, int, str]], memory: int) -> str:
    """Whether any of these native threads is an OpenMP runtime's. A running thread cannot
    be told apart until it waits: OpenMP's spin a few milliseconds after their work,
    OpenBLAS's about a tenth of a second; one still running after that counts as OpenMP's."""
    deadline = time.monotonic() + _PATIENCE_SECONDS
    while True:
        running = []
        for tid in unknown:
            name = _openmp_thread(tid, libraries, memory)
            if name is None:
                running.append(tid)
            elif name:
                return f"OpenMP threads are running ({name})"
        if not running:
            return ""
        if time.monotonic() >= deadline:
            return f"OpenMP threads may be running ({libraries[0][2]})"
        unknown = running
        time.sleep(_PATIENCE_STEP)


def _openmp_thread(tid: str, libraries: list[tuple[int, int, str]], memory: int) -> str | None:
    """The OpenMP runtime that native thread ``tid`` belongs to, ``""`` if none, None if
    it runs (cannot tell yet)."""
    try:
        with open(f"/proc/self/task/{tid}/comm") as file:
            if file.read().startswith(_KERNEL_NATIVE_NAMES):
                return ""
        with open(f"/proc/self/task/{tid}/syscall") as file:
            fields = file.read().split()
    except OSError:
        return ""  # it ended meanwhile
    if len(fields) < 3:
        return None if fields and fields[0] == "running" else ""
    stack, pc = int(fields[-2], 16), int(fields[-1], 16)
    words = [pc]
    if memory >= 0:
        try:
            data = os.pread(memory, _STACK_BYTES, stack)
            if len(data) == _STACK_BYTES:
                words.extend(_WORDS.unpack(data))
        except OSError:
            pass  # the top of its stack: the address it waits at still tells
    for word in words:
        for low, high, name in libraries:
            if low <= word < high:
                return name
    return ""


def _openmp_code() -> list[tuple[int, int, str]]:
    """The address ranges of the code of the OpenMP runtimes loaded here, and their names."""
    global _openmp_cache
    count, ranges = _openmp_cache
    if count == len(sys.modules):
        return ranges
    ranges = []
    try:
        with open("/proc/self/maps") as file:
            for line in file:
                if ".so" not in line:
                    continue
                fields = line.split()
                if len(fields) < 6 or "x" not in fields[1]:
                    continue
                base = fields[-1].rpartition("/")[2]
                for prefix, name in _OPENMP:
                    if base.startswith(prefix):
                        low, _, high = fields[0].partition("-")
                        ranges.append((int(low, 16), int(high, 16), name))
    except OSError:
        pass
    _openmp_cache = (len(sys.modules), ranges)
    return ranges
