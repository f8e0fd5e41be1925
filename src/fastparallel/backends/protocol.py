"""The wire format between the caller and a worker process: frames, messages, results.

A :class:`Channel` carries frames over one end of a pipe: an 8-byte length, then the
frame. A frame is a message: its :class:`Kind` (one byte), a fixed header for that kind
(a :mod:`struct`, decoded into a NamedTuple), then an optional body::

    caller -> worker   SETUP                                   body: pickled (fn, args, kwargs)
                       CHUNK  ChunkHeader(chunk_id, start, stop_on_error, has_bad_items,
                                          pool_size, report_start)  body: pickled list of items
                       STOP
    worker -> caller   STARTED StartedHeader(chunk_id, time)   (only if report_start: pause)
                       DONE   DoneHeader(chunk_id, seconds)    body: pickled (values, errors)
                       INIT_FAILED                             body: pickled packed exception

``errors`` in a DONE body lists ``(offset, ErrorKind, packed exception)``. The caller
turns a DONE body into a :class:`~.base.Done` or :class:`~.base.Split` outcome with
:func:`decode_result`.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Sequence
from enum import IntEnum
from typing import Any, NamedTuple

from ..chunking import Chunk
from ..errors import add_note, describe_item
from ..pickling import dumps, loads
from ..remote_errors import ErrorKind, PackedException, pack_exception, remote_item_error
from .base import Done, Split

__all__ = ["Channel", "Kind", "ChunkHeader", "DoneHeader", "StartedHeader", "encode", "decode", "encode_result",
           "decode_result"]

_LENGTH = struct.Struct("<Q")


class Channel:
    """One end of a pipe carrying length-prefixed frames; sending never copies the body."""

    __slots__ = ("fd",)

    def __init__(self, fd: int):
        self.fd = fd

    def fileno(self) -> int:
        return self.fd

    def send(self, *parts: bytes | memoryview) -> None:
        """Write one frame made of ``parts`` (one system call unless the pipe is full)."""
        views = [memoryview(p).cast("B") for p in parts]
        pending = [memoryview(_LENGTH.pack(sum(v.nbytes for v in views))), *views]
        while pending:
            written = os.writev(self.fd, pending)
            while pending and written >= pending[0].nbytes:
                written -= pending.pop(0).nbytes
            if written:
                pending[0] = pending[0][written:]

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

    def recv(self) -> bytearray:
        """The next frame; ``EOFError`` once the other end is closed."""
        (size,) = _LENGTH.unpack(self._read_exactly(_LENGTH.size))
        return self._read_exactly(size)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class Kind(IntEnum):
    """The kind of a message: the first byte of every frame."""

    SETUP = 1
    CHUNK = 2
    STOP = 3
    DONE = 4
    INIT_FAILED = 5
    STARTED = 6


class ChunkHeader(NamedTuple):
    chunk_id: int
    start: int  # input index of the chunk's first item
    stop_on_error: bool
    has_bad_items: bool  # some items are Unpicklable stand-ins
    pool_size: int  # workers in the pool: nested pools share the machine
    report_start: bool = False  # pause: send STARTED right before calling fn


class DoneHeader(NamedTuple):
    chunk_id: int
    seconds: float  # time spent calling fn


class StartedHeader(NamedTuple):
    chunk_id: int
    time: float  # time.monotonic() in the worker: system-wide, so it compares with the caller's


_HEADERS: dict[Kind, tuple[struct.Struct, type[Any]]] = {
    Kind.CHUNK: (struct.Struct("<BqqBBIB"), ChunkHeader),
    Kind.DONE: (struct.Struct("<Bqd"), DoneHeader),
    Kind.STARTED: (struct.Struct("<Bqd"), StartedHeader),
}
_BARE = struct.Struct("<B")
Header = ChunkHeader | DoneHeader | StartedHeader | None


def encode(kind: Kind, header: Header = None) -> bytes:
    """The head of a frame: its kind and header (the body is sent after it)."""
    if header is None:
        return _BARE.pack(kind)
    layout, _ = _HEADERS[kind]
    return layout.pack(kind, *header)


def decode(frame: bytearray) -> tuple[Kind, Header, memoryview]:
    """A frame's kind, header and body."""
    kind = Kind(frame[0])
    if kind not in _HEADERS:
        return kind, None, memoryview(frame)[_BARE.size:]
    layout, cls = _HEADERS[kind]
    header = cls(*layout.unpack_from(frame)[1:])
    return kind, header, memoryview(frame)[layout.size:]


# -- results: packed in the worker, decoded in the caller ----------------------------------

PackedErrors = list[tuple[int, ErrorKind, PackedException]]


def encode_result(values: list[Any], errors: PackedErrors) -> bytes:
    """Pickle a chunk's results; results that cannot be pickled become errors in their slot."""
    try:
        return dumps((values, errors))
    except Exception:
        pass
    errors = list(errors)
    for offset, value in enumerate(values):
        try:
            dumps(value)
        except Exception as exc:
            values[offset] = None
            errors.append((offset, ErrorKind.RESULT, pack_exception(exc, dumps)))
    return dumps((values, errors))


def decode_result(body: bytes | memoryview, chunk: Chunk, seconds: float, stop_on_error: bool) -> Done | Split:
    """In the caller: the outcome of a chunk from the body of its DONE message.

    When the chunk could not be unpickled in the worker, or its results here, the
    culprit is unknown: a chunk of several items is split to run item by item.
    """
    nbytes = memoryview(body).nbytes
    try:
        values, packed_errors = loads(body)
    except Exception as exc:
        if len(chunk.items) > 1:
            return Split(chunk)
        add_note(exc, f"fastparallel: the result of {describe_item(chunk.start, chunk.items[0])} "
                      "could not be unpickled in this process")
        return Done(chunk, [None], [(0, exc)], seconds, nbytes)
    errors: list[tuple[int, BaseException]] = []
    for offset, kind, packed in packed_errors:
        offsets: Sequence[int] = [offset]
        if kind == ErrorKind.ITEMS and len(chunk.items) > 1:
            return Split(chunk)
        if kind == ErrorKind.SETUP:  # fn itself could not be unpickled: every item fails alike
            offsets = [0] if stop_on_error else range(len(chunk.items))
            values = [None] * len(offsets)
        for o in offsets:
            errors.append((o, remote_item_error(ErrorKind(kind), packed, chunk.start + o, chunk.items[o])))
    return Done(chunk, values, errors, seconds, nbytes)

