"""A worker process forked for a pool, as the pool sees it: what the two ways of forking one
(from the caller, :mod:`.forking`; from the template, :mod:`.template.launcher`) share.

Each keeps the worker's pid, its two channels, its current-item slot and a sentinel, a
descriptor that becomes readable when the worker has ended; the subclass says how that
end is read (:meth:`WorkerHandle._ended_within`). This module is apart from both, so that
forking the caller does not import the template's modules (a first call pays for every
module it imports).
"""

from __future__ import annotations

import _socket
import os
import signal
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    import mmap

    from fastparallel.backends.processes.wire.channel import Channel

__all__ = ["WorkerHandle", "can_fork_workers"]


def can_fork_workers() -> bool:
    """Whether workers can be forked here and handed descriptors: ``os.fork``, descriptor
    passing over a socket, and an interpreter to run (the template's)."""
    passes_fds = hasattr(_socket.socket, "sendmsg") and hasattr(_socket.socket, "recvmsg")
    return hasattr(os, "fork") and passes_fds and bool(sys.executable)


class WorkerHandle:
    """A forked worker, as the pool sees it (see ``launch.WorkerProcess``)."""

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
        sentinel: int,
        inbox: Channel,
        outbox: Channel,
        memory: mmap.mmap,
    ):
        self.pid = pid
        self.sentinel = sentinel  # readable once the worker has ended
        self.inbox = inbox  # results come in here
        self.outbox = outbox  # chunks go out here
        self.current_item = memoryview(memory).cast("q")
        self._pidfd = pidfd
        self._memory = memory
        self._code: int | None = None
        self._ended = False

    def _ended_within(self, timeout: float | None) -> bool:
        """Whether the worker has ended, waiting up to ``timeout``; sets its exit code."""
        raise NotImplementedError

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
        """Release the channels, the sentinel, the pidfd and the slot (after it has ended)."""
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
