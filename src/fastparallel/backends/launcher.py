"""Starting worker processes: the start method, the channels, the current-item slot.

A launcher turns a request for a worker into a running :class:`WorkerProcess`: a
process with a channel each way and a shared slot where it writes the index of the item
it is running. The process pool (:mod:`.processes`) never needs to know how the process
was started.
"""

from __future__ import annotations

import logging
import multiprocessing
import multiprocessing.context
from typing import Any

from .protocol import Channel
from .worker import channel_from, process_main

__all__ = ["WorkerProcess", "MultiprocessingLauncher", "resolve_context"]

log = logging.getLogger("fastparallel")

_PIPE_BYTES = 1 << 20  # a chunk or a result rarely has to wait for room in the pipe


def resolve_context(method: Any) -> tuple[str, Any]:
    """The start method's name and multiprocessing context for ``method=``.

    The default is ``forkserver`` where the platform has it, else ``spawn``: both are
    safe when the caller runs threads, and the choice is the same on every Python.
    """
    if method is None:
        method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
    if isinstance(method, str):
        return method, multiprocessing.get_context(method)
    return method.get_start_method(), method


def _enlarge_pipe(fd: int) -> None:
    """Grow a pipe's buffer (Linux) so that writes rarely block on a busy reader."""
    try:
        import fcntl

        fcntl.fcntl(fd, getattr(fcntl, "F_SETPIPE_SZ", 1031), _PIPE_BYTES)
    except (ImportError, OSError):
        pass


class WorkerProcess:
    """A started worker process as the pool sees it."""

    __slots__ = ("process", "inbox", "outbox", "current_item")

    def __init__(self, process: Any, inbox: Channel, outbox: Channel, current_item: Any):
        self.process = process
        self.inbox = inbox  # results come in here
        self.outbox = outbox  # chunks go out here
        self.current_item = current_item  # [0]: input index of the item it runs, -1 for none

    @property
    def pid(self) -> int:
        return int(self.process.pid)

    @property
    def sentinel(self) -> int:
        """A handle that becomes ready when the process ends (for ``connection.wait``)."""
        return int(self.process.sentinel)

    def is_alive(self) -> bool:
        return bool(self.process.is_alive())

    def exitcode(self) -> int | None:
        """The exit code once it has ended (negative: killed by that signal), else None."""
        code = self.process.exitcode
        return None if code is None else int(code)

    def kill(self) -> None:
        self.process.kill()

    def join(self, timeout: float) -> None:
        self.process.join(timeout)

    def close(self) -> None:
        """Release the channels and the process object (after it has ended)."""
        self.inbox.close()
        self.outbox.close()
        self.process.close()


class MultiprocessingLauncher:
    """Starts workers with a :mod:`multiprocessing` context (fork, spawn or forkserver)."""

    def __init__(self, ctx: Any):
        self.ctx = ctx
        # Forked workers see the caller's state as of their fork: such a pool serves one
        # call only (like fastcore's), and may receive __main__ objects by reference.
        self.forks = ctx.get_start_method() == "fork"

    def start(self, init_blob: bytes | None) -> WorkerProcess:
        ctx = self.ctx
        worker_in, to_worker = ctx.Pipe(duplex=False)
        from_worker, worker_out = ctx.Pipe(duplex=False)
        _enlarge_pipe(to_worker.fileno())
        _enlarge_pipe(worker_out.fileno())
        current_item = ctx.RawArray("q", 1)
        current_item[0] = -1
        process = ctx.Process(
            target=process_main,
            args=(worker_in, worker_out, current_item, init_blob),
            name="fastparallel-worker",
            daemon=False,  # daemonic processes may not start their own pools (nested calls)
        )
        default_context = getattr(multiprocessing.context, "_default_context", None)
        unset = getattr(default_context, "_actual_context", "") is None
        process.start()
        if unset:
            # Starting a spawn/forkserver process asks multiprocessing.get_start_method(),
            # which fixes the global default as a side effect; undo it so that the
            # caller's own set_start_method() still works later.
            default_context._actual_context = None  # type: ignore[union-attr]
        worker_in.close()
        worker_out.close()
        log.debug("started worker process %s", process.pid)
        slot = memoryview(current_item).cast("B").cast("q")
        return WorkerProcess(process, channel_from(from_worker), channel_from(to_worker), slot)
