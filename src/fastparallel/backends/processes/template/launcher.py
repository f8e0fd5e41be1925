"""Workers forked from the template process, as the process pool sees them.

The caller creates each worker's pipes, status pipe, current-item slot and the
socketpair that passes out-of-band buffers (:mod:`.channel`), and hands their
worker-side ends to the template (:mod:`.template_client`), which forks the
worker and answers with its pid (and a pidfd where the platform has them). The template
writes the worker's exit code to the status pipe when it ends: its read end is the
worker's sentinel.
"""

from __future__ import annotations

import mmap
import os
import signal

from fastparallel import logs
from fastparallel.backends.processes.fds import enlarge_pipe, wait_ready
from fastparallel.backends.processes.template.client import (
    fork_worker,
    preload_cloudpickle,
    preload_modules,
)
from fastparallel.backends.processes.template.messages import STATUS
from fastparallel.backends.processes.wire.channel import Channel, new_passers
from fastparallel.backends.slots import new_slot_memory
from fastparallel.serialize.pickling import needs_cloudpickle

__all__ = ["TemplateLauncher", "TemplateWorker"]


class TemplateWorker:
    """A worker forked by the template, as the pool sees it (see ``launcher.WorkerProcess``)."""

    __slots__ = (
        "_code",
        "_ended",
        "_memory",
        "_pidfd",
        "current_item",
        "inbox",
        "outbox",
        "pid",
        "sentinel",
    )

    def __init__(
        self,
        pid: int,
        pidfd: int | None,
        status: int,
        inbox: Channel,
        outbox: Channel,
        memory: mmap.mmap,
    ):
        self.pid = pid
        self.sentinel = status  # readable once the template has reaped it and written its exit code
        self.inbox = inbox  # results come in here
        self.outbox = outbox  # chunks go out here
        self.current_item = memoryview(memory).cast("q")
        self._pidfd = pidfd
        self._memory = memory
        self._code: int | None = None
        self._ended = False

    def _ended_within(self, timeout: float | None) -> bool:
        if not self._ended and wait_ready([self.sentinel], timeout):
            data = os.read(self.sentinel, STATUS.size)
            # No exit code: the template itself died; the worker follows it within moments.
            self._code = STATUS.unpack(data)[0] if len(data) == STATUS.size else None
            self._ended = True
        return self._ended

    def is_alive(self) -> bool:
        return not self._ended_within(0)

    def exitcode(self) -> int | None:
        """The exit code once it has ended (negative: killed by that signal), else None."""
        self._ended_within(0)
        return self._code

    def kill(self) -> None:
        if self._ended_within(0):
            return  # reaped: its pid may already belong to another process
        try:
            if self._pidfd is not None:
                signal.pidfd_send_signal(self._pidfd, signal.SIGKILL)
            else:
                os.kill(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def join(self, timeout: float) -> None:
        self._ended_within(timeout)

    def close(self) -> None:
        """Release the channels, the status pipe, the pidfd and the slot (after it has ended)."""
        self.inbox.close()
        self.outbox.close()
        for fd in (self.sentinel, self._pidfd):
            if fd is not None and fd >= 0:
                os.close(fd)
        self.sentinel = -1
        self._pidfd = None
        self.current_item.release()
        self._memory.close()

    # In a forked child of the caller, closing our copies tells the worker nothing.
    forget_in_child = close


class TemplateLauncher:
    """Starts workers as forks of the template process (the default where ``os.fork`` exists)."""

    forks = False  # workers do not share the caller's memory: a pool serves many calls

    def expect(self, fn: object) -> None:
        if needs_cloudpickle(fn):
            preload_cloudpickle()

    def preload(self, modules: list[str]) -> None:
        preload_modules(modules)

    def describe(self) -> str:
        return "template"

    def start(self) -> TemplateWorker:
        worker_in, to_worker = os.pipe()
        from_worker, worker_out = os.pipe()
        status_r, status_w = os.pipe()
        enlarge_pipe(to_worker)
        enlarge_pipe(worker_out)
        slot, memory = new_slot_memory()
        passer, worker_passer = new_passers()
        assert passer is not None and worker_passer is not None  # the template passes descriptors
        worker_side = [worker_in, worker_out, status_w, slot, worker_passer.fileno()]
        try:
            pid, pidfd = fork_worker(worker_side)
        except BaseException:
            for fd in (to_worker, from_worker, status_r):
                os.close(fd)
            passer.close()
            memory.close()
            raise
        finally:
            for fd in worker_side[:-1]:
                os.close(fd)
            worker_passer.close()
        logs.debug("started worker process %s", pid)
        return TemplateWorker(
            pid, pidfd, status_r, Channel(from_worker, passer), Channel(to_worker, passer), memory
        )
