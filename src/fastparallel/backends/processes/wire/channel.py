"""Frames between the caller and a worker: on a pipe, with large buffers passed as descriptors.

A :class:`Channel` writes a frame as an 8-byte word (the frame's size, and in its top
16 bits how many out-of-band buffers come with it) followed by the frame, with one
``writev``; it reads a frame without an extra copy. The frame itself is a message of
:mod:`.protocol`.

Out-of-band buffers (:mod:`.buffers`) travel as descriptors of shared memory over a
second, per-worker ``socketpair`` (the *passer*, shared by the worker's two channels):
``sendmsg`` with ``SCM_RIGHTS`` (and the buffers' sizes) just before the frame. Frames stay on
pipes because a round trip of a tiny frame costs about a quarter less on a pipe than on
a socket, and most frames are tiny.
"""

from __future__ import annotations

# _socket, not socket: socket's Python half (its enums) costs ~2 ms on every first call.
import _socket
import os
import struct

from fastparallel.backends.processes.wire.buffers import available, close_all, receive, share

TYPE_CHECKING = False  # worker processes import this module: no typing at run time
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from pickle import PickleBuffer
    from typing import Any

__all__ = [
    "Broadcast",
    "BuffersLost",
    "BuffersRefused",
    "Channel",
    "Pickled",
    "can_pass_buffers",
    "channel_from",
    "descriptor_room",
    "new_passers",
    "recv_fds",
    "send_fds",
    "send_with_buffers",
]

_WORD = struct.Struct("<Q")  # a frame's size, and in the top bits how many buffers come with it
_COUNT_SHIFT = 48
_SIZE_MASK = (1 << _COUNT_SHIFT) - 1
_NO_BUFFERS: list[memoryview] = []  # never appended to: what frames without buffers come with
_CLOEXEC = getattr(_socket, "MSG_CMSG_CLOEXEC", 0)
_PLENTY = 1 << 30  # descriptor_room() where the limit is unknown or infinite


class BuffersRefused(Exception):
    """The kernel would not pass a message's descriptors (too many in flight); nothing was
    sent: the message may go in band instead."""


class BuffersLost(Exception):
    """Fewer descriptors arrived with a frame than were passed: the kernel drops those it
    cannot install, when the receiver is at its ``RLIMIT_NOFILE`` soft limit. The
    buffers are gone (every descriptor that did arrive is closed): the message must be
    sent again, in band. ``frame`` is the frame they came with."""

    def __init__(self, frame: bytearray, passed: int, arrived: int):
        super().__init__(
            f"{passed - arrived} of the {passed} shared-memory descriptors passed with a "
            "message were dropped: this process is at its limit of open files (RLIMIT_NOFILE)"
        )
        self.frame = frame


class Channel:
    """One end of a pipe carrying frames; sending never copies the body.

    ``passer`` carries the descriptors of a frame's out-of-band buffers; without one,
    buffers cannot travel out of band (``passes_buffers`` is false).
    """

    __slots__ = ("fd", "passer")

    def __init__(self, fd: int, passer: _socket.socket | None = None):
        self.fd = fd
        self.passer = passer

    def fileno(self) -> int:
        return self.fd

    @property
    def passes_buffers(self) -> bool:
        return self.passer is not None

    def send(
        self, *parts: bytes | memoryview, fds: Sequence[int] = (), sizes: Sequence[int] = ()
    ) -> None:
        """Write one frame made of ``parts`` (one system call unless the pipe is full), after
        passing ``fds``, the shared memory of its out-of-band buffers, and their ``sizes``."""
        views = [memoryview(p).cast("B") for p in parts]
        word = sum(v.nbytes for v in views)
        if fds:
            self._pass(fds, sizes)
            word |= len(fds) << _COUNT_SHIFT
        pending = [memoryview(_WORD.pack(word)), *views]
        while pending:
            written = os.writev(self.fd, pending)
            while pending and written >= pending[0].nbytes:
                written -= pending.pop(0).nbytes
            if written:
                pending[0] = pending[0][written:]

    def _pass(self, fds: Sequence[int], sizes: Sequence[int]) -> None:
        # The sizes travel too: the memory's own size may be rounded up to whole pages (macOS).
        assert self.passer is not None and len(sizes) == len(fds)
        try:
            send_fds(self.passer, struct.pack(f"<{len(sizes)}Q", *sizes), fds)
        except ConnectionError:  # the worker (or the caller) is gone
            raise
        except OSError as exc:  # ETOOMANYREFS: more descriptors in flight than RLIMIT_NOFILE
            raise BuffersRefused(str(exc)) from exc

    def _read_exactly(self, n: int) -> bytearray:
        buf = bytearray(n)
        view = memoryview(buf)
        got = 0
        while got < n:
            count = os.readv(self.fd, [view[got:]])
            if count == 0:
                raise EOFError("the other end of the channel closed")
            got += count
        return buf

    def recv(self) -> tuple[bytearray, list[memoryview]]:
        """The next frame and its out-of-band buffers (:func:`.buffers.receive`); ``EOFError``
        once the other end is closed, :class:`BuffersLost` where descriptors were dropped.
        Descriptors are closed here, whatever happens."""
        (word,) = _WORD.unpack(self._read_exactly(_WORD.size))
        frame = self._read_exactly(word & _SIZE_MASK)
        count = word >> _COUNT_SHIFT
        if not count:
            return frame, _NO_BUFFERS
        return frame, self._receive_buffers(frame, count)

    def _receive_buffers(self, frame: bytearray, count: int) -> list[memoryview]:
        """The buffers passed with ``frame``: ``BuffersLost`` if some descriptors were dropped."""
        assert self.passer is not None
        data, fds = recv_fds(self.passer, 8 * count, count, _CLOEXEC)
        try:
            while 0 < len(data) < 8 * count:  # the rest of the sizes, should they come apart
                more = self.passer.recv(8 * count - len(data))
                data += more
                if not more:
                    break
        except BaseException:
            close_all(fds)
            raise
        if len(fds) < count:
            close_all(fds)
            raise BuffersLost(frame, count, len(fds))
        sizes = struct.unpack(f"<{len(data) // 8}Q", data[: len(data) // 8 * 8])
        return receive(fds, sizes)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        if self.passer is not None:
            self.passer.close()  # shared with the other channel: closing twice is harmless


class Pickled:
    """A pickled message body, the large buffers it leaves out of band (PickleBuffers), and
    how to pickle it again in band should they fail to travel."""

    __slots__ = ("body", "buffers", "in_band")

    def __init__(
        self, body: bytes, buffers: list[PickleBuffer] | None, in_band: Callable[[], bytes]
    ):
        self.body = body
        self.buffers = buffers or []
        self.in_band = in_band


def _sizes(buffers: list[PickleBuffer]) -> list[int]:
    return [memoryview(b).nbytes for b in buffers]


def _share(buffers: list[PickleBuffer]) -> list[int]:
    try:
        return share(buffers)
    except OSError:  # out of memory or descriptors: the message goes in band
        return []


def send_with_buffers(channel: Channel, head: bytes, pickled: Pickled) -> None:
    """Send a message: its out-of-band buffers each in its own shared memory, passed with
    the frame. If that memory or the passing fails, the body is pickled again in band and
    goes through the pipe alone."""
    body = pickled.body
    if pickled.buffers:
        fds = _share(pickled.buffers) if channel.passes_buffers else []
        try:
            if fds:
                channel.send(head, body, fds=fds, sizes=_sizes(pickled.buffers))
                return
        except BuffersRefused:
            pass
        finally:
            close_all(fds)
        body = pickled.in_band()
    channel.send(head, body)


class Broadcast:
    """One message for several workers (the call): its out-of-band buffers are copied into
    shared memory once, on the first send, and every worker maps that same memory (each
    privately: copy-on-write). :meth:`close` releases it; the message cannot be sent after."""

    def __init__(self, head: bytes, pickled: Pickled):
        self.head = head
        self.pickled = pickled
        self.out_of_band = bool(pickled.buffers)
        self._in_band_body: bytes | None = None
        self._fds: list[int] | None = None  # None: not shared yet

    def send(self, channel: Channel, out_of_band: bool = True) -> None:
        """Send the message on ``channel``; through the pipe alone if not ``out_of_band``
        (its receiver has no room for descriptors)."""
        pickled = self.pickled
        if not self.out_of_band:
            channel.send(self.head, pickled.body)
            return
        if self._fds is None and out_of_band:
            self._fds = _share(pickled.buffers)
        if self._fds and channel.passes_buffers and out_of_band:
            try:
                channel.send(self.head, pickled.body, fds=self._fds, sizes=_sizes(pickled.buffers))
                return
            except BuffersRefused:
                pass
        if self._in_band_body is None:
            self._in_band_body = pickled.in_band()
        channel.send(self.head, self._in_band_body)

    def close(self) -> None:
        """Release the shared memory, and the objects the buffers belong to."""
        close_all(self._fds or ())
        self._fds = None
        self.pickled.buffers = []
        self._in_band_body = None


def can_pass_buffers() -> bool:
    """Whether buffers can travel by shared memory here (else they stay in the pickle)."""
    return available() and hasattr(_socket.socket, "sendmsg") and hasattr(_socket, "AF_UNIX")


def descriptor_room() -> int:
    """How many more descriptors this process may open under its ``RLIMIT_NOFILE`` soft
    limit, now; a large number where it cannot tell (about 10 us: the open ones are listed)."""
    soft = _soft_descriptor_limit()
    if soft is None or soft >= _PLENTY:
        return _PLENTY
    for listing in ("/proc/self/fd", "/dev/fd"):
        try:
            used = len(os.listdir(listing)) - 1  # less the one listdir held open
        except OSError:
            continue
        return max(0, soft - used)
    return _PLENTY


def _soft_descriptor_limit() -> int | None:
    """``RLIMIT_NOFILE``'s soft limit; None for none. ``sysconf`` reads it where the C
    library does (glibc, musl, macOS): importing :mod:`resource` would cost a first call
    ~0.2 ms."""
    try:
        soft = os.sysconf("SC_OPEN_MAX")
    except (AttributeError, OSError, ValueError):
        soft = -1
    if soft > 0:
        return soft
    try:
        import resource

        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (ImportError, OSError, ValueError):
        return None
    return None if soft == resource.RLIM_INFINITY else soft


def new_passers() -> tuple[_socket.socket, _socket.socket] | tuple[None, None]:
    """The caller's and the worker's ends of a new passer; none where buffers cannot travel
    by shared memory."""
    return _socket.socketpair() if can_pass_buffers() else (None, None)


def channel_from(connection: Any, passer: _socket.socket | None) -> Channel:
    """A :class:`Channel` on the file descriptor of a multiprocessing ``Connection`` (closed)."""
    fd = os.dup(connection.fileno())
    connection.close()
    return Channel(fd, passer)


def send_fds(sock: _socket.socket, data: bytes, fds: Sequence[int]) -> None:
    """Send ``data`` over the Unix socket ``sock`` with copies of the descriptors ``fds``."""
    import array  # here: only large buffers travel this way, and a first call need not load it

    rights = array.array("i", fds)
    sock.sendmsg([data], [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, rights)] if fds else [])


def recv_fds(
    sock: _socket.socket, size: int, max_fds: int, flags: int = 0
) -> tuple[bytes, list[int]]:
    """Up to ``size`` bytes from ``sock`` and the descriptors (at most ``max_fds``) that
    came with them."""
    import array

    rights = array.array("i")
    data, ancillary, _, _ = sock.recvmsg(size, _socket.CMSG_SPACE(max_fds * rights.itemsize), flags)
    for level, kind, payload in ancillary:
        if level == _socket.SOL_SOCKET and kind == _socket.SCM_RIGHTS:
            # A descriptor cut short by a small buffer is none.
            whole = len(payload) - len(payload) % rights.itemsize
            rights.frombytes(payload[:whole])
    return data, rights.tolist()
