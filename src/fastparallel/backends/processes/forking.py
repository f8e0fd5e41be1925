"""Workers forked from the caller itself, and the default launcher that forks when it is safe.

With ``method=None`` on Linux, :class:`DefaultLauncher` checks at each pool start
whether forking the caller is safe (:mod:`.forksafe`). If it is, each worker is a fork
of the calling process (:func:`fork_caller`): it starts in about a millisecond with
everything the caller imported and its module state as of that moment. If it is not,
workers are forks of the template process (:mod:`.template.launcher`), which first
imports the modules the call needs.

A worker forked from the caller keeps the template workers' promises: it holds only its
own pipes (every pool's descriptors are closed in a forked child by the at-fork
registry, :func:`fastparallel.worker_state.at_fork_in_child`), it runs none of the
caller's threads or ``atexit`` handlers (it ends with ``os._exit``), and it ends when
the caller does, even by SIGKILL: end of file on its inbound pipe, a new parent
process id, and, when forked from the main thread with :mod:`ctypes` loaded, the
kernel's parent-death signal.
"""

from __future__ import annotations

import os
import signal
import sys
import threading

from fastparallel import logs
from fastparallel.backends import native_threads
from fastparallel.backends.processes.fds import enlarge_pipe, wait_ready
from fastparallel.backends.processes.forksafe import unsafe_reason
from fastparallel.backends.processes.handles import WorkerHandle
from fastparallel.backends.processes.wire.channel import Channel, new_passers
from fastparallel.backends.slots import new_slot_memory

TYPE_CHECKING = False
if TYPE_CHECKING:
    from fastparallel.backends.processes.template.launcher import TemplateLauncher

__all__ = ["DefaultLauncher", "ForkedWorker", "fork_caller"]

_PR_SET_PDEATHSIG = 1
_launch_lock = threading.Lock()  # one worker's descriptors at a time: no fork takes another's


class ForkedWorker(WorkerHandle):
    """A worker forked from this process: its sentinel is a pidfd (or a pipe it holds)
    and this process reaps it, so that until then its pid cannot belong to another
    process (``kill`` signals the pid)."""

    __slots__ = ()

    def _ended_within(self, timeout: float | None) -> bool:
        if not self._ended and wait_ready([self.sentinel], timeout):
            try:
                _, status = os.waitpid(self.pid, 0)
                self._code = os.waitstatus_to_exitcode(status)
            except ChildProcessError:
                self._code = None  # reaped by someone else (SIGCHLD ignored, os.wait())
            self._ended = True
        return self._ended


def _has_pidfd() -> bool:
    global _pidfds
    if _pidfds is None:
        try:
            os.close(os.pidfd_open(os.getpid()))
            _pidfds = True
        except (AttributeError, OSError):
            _pidfds = False
    return _pidfds


_pidfds: bool | None = None


def fork_caller() -> ForkedWorker:
    """A worker process forked from this one now (the caller checked it is safe)."""
    native_threads.survey_native_pools()  # each worker inherits the list of native pools
    worker_in, to_worker = os.pipe()
    from_worker, worker_out = os.pipe()
    enlarge_pipe(to_worker)
    enlarge_pipe(worker_out)
    slot, memory = new_slot_memory()
    os.close(slot)  # the child inherits the mapping itself
    passer, worker_passer = new_passers()
    assert passer is not None and worker_passer is not None  # fork passes descriptors
    pidfds = _has_pidfd()
    alive_r, alive_w = (-1, -1) if pidfds else os.pipe()
    caller_side = [to_worker, from_worker, alive_r]
    worker_side = [worker_in, worker_out, alive_w]
    deathsig = threading.current_thread() is threading.main_thread() and "ctypes" in sys.modules
    _flush_std_streams()  # else the child would write out the caller's buffered output again
    with _launch_lock:
        pid = _fork()
        if pid == 0:
            _launch_lock.release()  # the child's copy: it may start pools of its own
            passer.close()
            _become_worker(worker_side, caller_side, worker_passer, memory, deathsig)
    for fd in worker_side:
        if fd >= 0:
            os.close(fd)
    worker_passer.close()
    sentinel = os.pidfd_open(pid) if pidfds else alive_r
    logs.debug("forked worker process %s from the caller", pid)
    return ForkedWorker(
        pid, None, sentinel, Channel(from_worker, passer), Channel(to_worker, passer), memory
    )


def _fork() -> int:
    if sys.version_info < (3, 12):
        return os.fork()
    import warnings

    # Python 3.12+ warns about forking a process with threads; this fork was checked to
    # be safe (the threads are OpenBLAS's, a kernel's I/O, fastparallel's idle ones).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return os.fork()


def _flush_std_streams() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:  # noqa: SIM105 - nothing more on a first call's way than needed
            stream.flush()
        except Exception:
            pass


def _become_worker(
    worker_side: list[int], caller_side: list[int], passer: object, memory: object, deathsig: bool
) -> None:
    """In the forked child: become a worker, then exit (never returns)."""
    from fastparallel.backends.processes import worker

    try:
        for fd in caller_side:
            if fd >= 0:
                os.close(fd)
        if deathsig:
            _die_with_parent()
        _reset_inherited_state()
        worker_in, worker_out, alive_w = worker_side
        current_item = memoryview(memory).cast("q")  # type: ignore[arg-type]
        worker.serve(
            Channel(worker_in, passer),  # type: ignore[arg-type]
            Channel(worker_out, passer),  # type: ignore[arg-type]
            current_item,
            [alive_w] if alive_w >= 0 else [],
            caller_fork=True,
        )
    except BaseException:
        import traceback

        traceback.print_exc()
    finally:
        os._exit(1)


def _die_with_parent() -> None:
    """Ask the kernel for SIGKILL when the caller (the thread that forked us) dies."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except Exception:  # pragma: no cover - the pipe and the parent check still tell
        pass
    if os.getppid() == 1:  # the caller died before the request took effect
        os._exit(0)


def _reset_inherited_state() -> None:
    """Drop what the caller set up for itself: its signal wakeup (asyncio), stdin."""
    try:  # noqa: SIM105 - nothing more on a worker's start than needed
        signal.set_wakeup_fd(-1)
    except (ValueError, OSError):
        pass
    for signum in (signal.SIGCHLD, signal.SIGTERM, signal.SIGHUP):
        try:  # noqa: SIM105
            signal.signal(signum, signal.SIG_DFL)
        except (ValueError, OSError):
            pass
    try:
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.close(null)
        sys.stdin = open(os.devnull)  # noqa: SIM115 - the worker's stdin for its life
    except OSError:
        pass


class DefaultLauncher:
    """``method=None`` on Linux: fork the caller when that is safe, else the template.

    The choice is made when a pool starts workers (:meth:`expect`), from the facts then
    (:func:`.forksafe.unsafe_reason`); a warm pool keeps the workers it has.
    """

    forks = False  # a warm pool serves many calls: __main__ objects travel by value

    def __init__(self) -> None:
        self._template: TemplateLauncher | None = None  # imported the first time fork is unsafe
        self.reason = "not yet checked"  # why the caller cannot be forked ("" if it can)

    def _templates(self) -> TemplateLauncher:
        if self._template is None:
            from fastparallel.backends.processes.template.launcher import TemplateLauncher

            self._template = TemplateLauncher()
        return self._template

    def expect(self, fn: object) -> None:
        self.reason = unsafe_reason()
        if self.reason:
            self._templates().expect(fn)

    def preload(self, modules: list[str]) -> None:
        if self.reason:
            self._templates().preload(modules)

    def describe(self) -> str:
        return f"template: {self.reason}" if self.reason else "fork of the caller"

    def start(self) -> WorkerHandle:
        return self._templates().start() if self.reason else fork_caller()
