"""The code a worker process runs: receive chunks, run them, send results back.

It runs in the child only and imports only what a worker needs (the wire format in
:mod:`.protocol`, the per-item loop, pickling). A reader thread drains the inbound
channel into a queue, so the caller's sends never block on a worker that is busy
sending a large result (no pipe deadlock). The same thread ends the worker when the
caller goes away: end of file on the channel, or a new parent process id.

:func:`run_packed` is also what an external executor's worker runs for one chunk.
"""

from __future__ import annotations

import faulthandler
import os
import queue
import signal
import sys
import threading
import time
from typing import Any

from .. import cpus, pools
from ..calls import Call, CurrentItem, run_chunk
from ..pickling import dumps, loads
from ..remote_errors import ErrorKind, pack_exception
from .protocol import (
    Channel,
    ChunkHeader,
    DoneHeader,
    Kind,
    PackedErrors,
    StartedHeader,
    decode,
    encode,
    encode_result,
)

__all__ = ["Unpicklable", "run_packed", "serve", "process_main", "channel_from"]

_PARENT_CHECK_SECONDS = 0.25


class Unpicklable:
    """Stands in a chunk for an input item that could not be pickled; carries the error."""

    def __init__(self, packed: tuple[Any, ...]):
        self.packed = packed


def run_packed(call: Call | BaseException, items: list[Any], start: int, stop_on_error: bool,
               has_bad_items: bool = False, current_item: CurrentItem | None = None) -> tuple[bytes, float]:
    """Run a chunk; returns the pickled ``(values, errors)`` and the seconds ``fn`` took.

    ``call`` is the exception raised while unpickling the call, if it could not be.
    """
    if isinstance(call, BaseException):
        return encode_result([None], [(0, ErrorKind.SETUP, pack_exception(call, dumps))]), 0.0
    if not has_bad_items:
        run = run_chunk(call, items, start, stop_on_error, current_item=current_item)
        errors: PackedErrors = [(o, ErrorKind.FN, pack_exception(e, dumps)) for o, e in run.errors]
        return encode_result(run.values, errors), run.seconds
    values: list[Any] = []
    errors = []
    seconds = 0.0
    for offset, item in enumerate(items):
        if isinstance(item, Unpicklable):
            values.append(None)
            errors.append((offset, ErrorKind.ITEM, item.packed))
        else:
            run = run_chunk(call, [item], start + offset, stop_on_error, current_item=current_item)
            values.extend(run.values)
            errors.extend((offset, ErrorKind.FN, pack_exception(e, dumps)) for _, e in run.errors)
            seconds += run.seconds
        if errors and stop_on_error:
            break
    return encode_result(values, errors), seconds


def _read_inbound(inbound: Channel, inbox: queue.SimpleQueue[bytearray], parent_pid: int) -> None:
    import select

    try:
        while True:
            ready, _, _ = select.select([inbound], [], [], _PARENT_CHECK_SECONDS)
            if ready:
                inbox.put(inbound.recv())
            elif os.getppid() != parent_pid:
                break
    except (EOFError, OSError):
        pass
    _exit_now()


def _exit_now(code: int = 0) -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass
    os._exit(code)


def _run_initializer(init_blob: bytes | None, outbound: Channel) -> None:
    if init_blob is None:
        return
    try:
        initializer, initargs = loads(init_blob)
        initializer(*initargs)
    except BaseException as exc:  # noqa: BLE001 - reported to the caller
        outbound.send(encode(Kind.INIT_FAILED), dumps(pack_exception(exc, dumps)))
        _exit_now(1)


def _run_chunk_message(call: Call | BaseException, header: ChunkHeader, body: memoryview,
                       current_item: memoryview, outbound: Channel) -> tuple[bytes, float]:
    cpus.set_enclosing_pool_size(header.pool_size)
    current_item[0] = -1  # nothing of this chunk runs yet (a crash while unpickling blames no item)
    try:
        items = loads(body)
    except BaseException as exc:  # noqa: BLE001 - reported on the chunk
        return encode_result([None], [(0, ErrorKind.ITEMS, pack_exception(exc, dumps))]), 0.0
    if header.report_start:  # pause: the caller releases the next item from this time on
        outbound.send(encode(Kind.STARTED, StartedHeader(header.chunk_id, time.monotonic())))
    return run_packed(call, items, header.start, header.stop_on_error, header.has_bad_items, current_item)


def serve(inbound: Channel, outbound: Channel, current_item: memoryview, init_blob: bytes | None) -> None:
    """The worker's life: run the initializer, then chunks until STOP or the caller goes away."""
    # A terminal Ctrl-C goes to the whole process group; only the caller should react.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    faulthandler.enable()
    inbox: queue.SimpleQueue[bytearray] = queue.SimpleQueue()
    threading.Thread(target=_read_inbound, args=(inbound, inbox, os.getppid()), daemon=True,
                     name="fastparallel-inbound").start()
    _run_initializer(init_blob, outbound)
    call: Call | BaseException = RuntimeError("no SETUP message before the first chunk")
    while True:
        kind, header, body = decode(inbox.get())
        if kind == Kind.CHUNK:
            assert isinstance(header, ChunkHeader)
            result, seconds = _run_chunk_message(call, header, body, current_item, outbound)
            outbound.send(encode(Kind.DONE, DoneHeader(header.chunk_id, seconds)), result)
        elif kind == Kind.SETUP:
            try:
                call = Call(*loads(body))
            except BaseException as exc:  # noqa: BLE001 - reported per item
                call = exc
        else:  # STOP
            break
    pools.shutdown()  # pools that fn started in this worker (nested parallel() calls)
    _exit_now(0)


def channel_from(connection: Any) -> Channel:
    """A :class:`Channel` on the file descriptor of a multiprocessing ``Connection`` (closed)."""
    fd = os.dup(connection.fileno())
    connection.close()
    return Channel(fd)


def process_main(inbound: Any, outbound: Any, current_item: Any, init_blob: bytes | None) -> None:
    """Entry point of a worker started by :mod:`multiprocessing` (the ``target`` of its Process).

    ``inbound`` and ``outbound`` are :class:`multiprocessing.connection.Connection` objects
    (which multiprocessing knows how to hand to a child under every start method);
    ``current_item`` is a one-element shared ``RawArray('q')``.
    """
    slot = memoryview(current_item).cast("B").cast("q")
    serve(channel_from(inbound), channel_from(outbound), slot, init_blob)
