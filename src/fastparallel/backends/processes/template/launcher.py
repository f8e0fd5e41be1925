"""Workers forked from the template process, as the process pool sees them.

The caller creates each worker's pipes, status pipe, current-item slot and the
socketpair that passes out-of-band buffers (:mod:`.channel`), and hands their
worker-side ends to the template (:mod:`.template_client`), which forks the
worker and answers with its pid (and a pidfd where the platform has them). The template
writes the worker's exit code to the status pipe when it ends: its read end is the
worker's sentinel.
"""

from __future__ import annotations

import os

from fastparallel import logs
from fastparallel.backends.processes.fds import enlarge_pipe, wait_ready
from fastparallel.backends.processes.handles import WorkerHandle
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


class TemplateWorker(WorkerHandle):
    """A worker forked by the template: the template reaps it and writes its exit code to
    the status pipe, whose read end is the sentinel."""

    __slots__ = ()

    def _ended_within(self, timeout: float | None) -> bool:
        if not self._ended and wait_ready([self.sentinel], timeout):
            data = os.read(self.sentinel, STATUS.size)
            # No exit code: the template itself died; the worker follows it within moments.
            self._code = STATUS.unpack(data)[0] if len(data) == STATUS.size else None
            self._ended = True
        return self._ended


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
