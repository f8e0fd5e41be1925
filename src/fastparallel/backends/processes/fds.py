"""File descriptors of worker processes: pipe sizes, and waiting for several at once."""

from __future__ import annotations

TYPE_CHECKING = False  # the template imports this module: no typing at run time
if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["enlarge_pipe", "wait_ready"]

_PIPE_BYTES = 1 << 20  # a chunk or a result rarely has to wait for room in the pipe


def enlarge_pipe(fd: int) -> None:
    """Grow a pipe's buffer (Linux) so that writes rarely block on a busy reader."""
    try:
        import fcntl

        fcntl.fcntl(fd, getattr(fcntl, "F_SETPIPE_SZ", 1031), _PIPE_BYTES)
    except (ImportError, OSError):
        pass


def wait_ready(handles: Sequence[int], timeout: float | None) -> list[int]:
    """The handles (file descriptors) that are readable or closed, waiting up to ``timeout``."""
    try:
        from select import POLLIN, poll
    except ImportError:  # pragma: no cover - Windows: sentinels are handles
        from multiprocessing.connection import wait

        return wait(handles, timeout)  # type: ignore[return-value]
    poller = poll()
    for handle in handles:
        poller.register(handle, POLLIN)  # end of file and errors are always reported
    ms = None if timeout is None else max(0, int(timeout * 1000 + 0.999))
    return [fd for fd, _ in poller.poll(ms)]
