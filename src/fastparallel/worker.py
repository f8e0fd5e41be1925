"""The code a process worker runs: receive chunks, run them, send results back.

Wire protocol, over a pair of pipes per worker (one each way). Every message is a small header frame
(plain pickle of a tuple) optionally followed by one body frame:

    caller -> worker   ("setup", key)                  + body: pickled (fn, args, kwargs)
                       ("chunk", id, key, start, stop_on_error, has_bad_items, pool_size)
                                                       + body: pickled list of items
                       ("stop",)
    worker -> caller   ("done", id, seconds)           + body: pickled (values, errors)
                       ("init_failed",)                + body: packed exception

A reader thread drains the pipe into a queue, so the caller's sends never block on a
worker that is busy sending a large result (no pipe deadlock). The same thread ends the
worker when the caller goes away: end of file on the pipe, or a new parent process id.
"""

from __future__ import annotations

import faulthandler
import os
import pickle
import queue
import signal
import sys
import threading
from collections.abc import Sequence
from typing import Any

from . import cpus
from .backend import Done, Split
from .chunking import Chunk
from .errors import add_note, describe_item, pack_exception, remote_item_error
from .serialization import dumps, loads
from .tasks import Call, Mark, run_chunk

__all__ = ["worker_main", "Unpicklable", "run_packed", "decode_result"]

_PARENT_CHECK_SECONDS = 0.25


class Unpicklable:
    """Stands in a chunk for an input item that could not be pickled; carries the error."""

    def __init__(self, packed: tuple[Any, ...]):
        self.packed = packed


def _read_pipe(conn: Any, inbox: queue.SimpleQueue[bytes], parent_pid: int) -> None:
    try:
        while True:
            if conn.poll(_PARENT_CHECK_SECONDS):
                inbox.put(conn.recv_bytes())
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


def _send(conn: Any, header: tuple[Any, ...], body: bytes | None = None) -> None:
    conn.send_bytes(pickle.dumps(header, protocol=pickle.HIGHEST_PROTOCOL))
    if body is not None:
        conn.send_bytes(body)


def _pack_result(values: list[Any], errors: list[tuple[int, str, tuple[Any, ...]]]) -> bytes:
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
            errors.append((offset, "result", pack_exception(exc, dumps)))
    return dumps((values, errors))


def decode_result(body: bytes, chunk: Chunk, seconds: float, stop_on_error: bool) -> Done | Split:
    """In the caller: the outcome of a chunk from the body of its "done" message.

    When the chunk could not be unpickled in the worker, or its results here, the
    culprit is unknown: a chunk of several items is split to run item by item.
    """
    try:
        values, packed_errors = loads(body)
    except Exception as exc:
        if len(chunk.items) > 1:
            return Split(chunk)
        add_note(exc, f"fastparallel: the result of {describe_item(chunk.start, chunk.items[0])} "
                      "could not be unpickled in this process")
        return Done(chunk, [None], [(0, exc)], seconds, len(body))
    errors: list[tuple[int, BaseException]] = []
    for offset, kind, packed in packed_errors:
        offsets: Sequence[int] = [offset]
        if kind == "items" and len(chunk.items) > 1:
            return Split(chunk)
        if kind == "setup":  # fn itself could not be unpickled: every item fails alike
            offsets = [0] if stop_on_error else range(len(chunk.items))
            values = [None] * len(offsets)
        for o in offsets:
            errors.append((o, remote_item_error(kind, packed, chunk.start + o, chunk.items[o])))
    return Done(chunk, values, errors, seconds, len(body))


def run_packed(call: Call | BaseException, items: list[Any], start: int, stop_on_error: bool,
               has_bad_items: bool = False, slot: Mark | None = None) -> tuple[bytes, float]:
    """In a worker: run a chunk and return the pickled ``(values, errors)`` and the seconds it took."""
    values, errors, seconds = _run(call, items, start, stop_on_error, has_bad_items, slot)
    return _pack_result(values, errors), seconds


def _run(call: Call | BaseException, items: list[Any], start: int, stop_on_error: bool,
         has_bad_items: bool, slot: Mark | None) -> tuple[list[Any], list[Any], float]:
    if isinstance(call, BaseException):  # fn/args/kwargs could not be unpickled here
        return [None], [(0, "setup", pack_exception(call, dumps))], 0.0
    if not has_bad_items:
        run = run_chunk(call, items, start, stop_on_error, mark=slot)
        errors = [(o, "fn", pack_exception(e, dumps)) for o, e in run.errors]
        return run.values, errors, run.seconds
    values: list[Any] = []
    errors = []
    seconds = 0.0
    for offset, item in enumerate(items):
        if isinstance(item, Unpicklable):
            values.append(None)
            errors.append((offset, "item", item.packed))
        else:
            run = run_chunk(call, [item], start + offset, stop_on_error, mark=slot)
            values.extend(run.values)
            errors.extend((offset, "fn", pack_exception(e, dumps)) for _, e in run.errors)
            seconds += run.seconds
        if errors and stop_on_error:
            break
    return values, errors, seconds


def worker_main(inbound: Any, conn: Any, slot: Any, init_blob: bytes | None) -> None:
    """Entry point of a worker process (the ``target`` of its ``multiprocessing.Process``)."""
    # A terminal Ctrl-C goes to the whole process group; only the caller should react.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    faulthandler.enable()
    mark = memoryview(slot).cast("B").cast("q")  # the item in progress, read by the caller after a crash
    inbox: queue.SimpleQueue[bytes] = queue.SimpleQueue()
    threading.Thread(target=_read_pipe, args=(inbound, inbox, os.getppid()), daemon=True,
                     name="fastparallel-pipe-reader").start()

    if init_blob is not None:
        try:
            initializer, initargs = loads(init_blob)
            initializer(*initargs)
        except BaseException as exc:  # noqa: BLE001 - reported to the caller
            _send(conn, ("init_failed",), pickle.dumps(pack_exception(exc, dumps)))
            _exit_now(1)

    call: Call | BaseException | None = None
    while True:
        header = pickle.loads(inbox.get())
        kind = header[0]
        if kind == "chunk":
            _, chunk_id, _key, start, stop_on_error, has_bad_items, pool_size = header
            cpus._enclosing_pool_size = pool_size
            mark[0] = -1  # nothing of this chunk runs yet (a crash while unpickling blames no item)
            body = inbox.get()
            try:
                items = loads(body)
            except BaseException as exc:  # noqa: BLE001
                packed = pack_exception(exc, dumps)
                _send(conn, ("done", chunk_id, 0.0), dumps(([None], [(0, "items", packed)])))
                continue
            assert call is not None
            body, seconds = run_packed(call, items, start, stop_on_error, has_bad_items, mark)
            _send(conn, ("done", chunk_id, seconds), body)
        elif kind == "setup":
            body = inbox.get()
            try:
                call = Call(*loads(body))
            except BaseException as exc:  # noqa: BLE001 - reported per item
                call = exc
        else:  # "stop"
            break
    _shutdown_nested_pools()
    _exit_now(0)


def _shutdown_nested_pools() -> None:
    """Stop pools that ``fn`` started inside this worker (nested ``parallel()`` calls)."""
    pools = sys.modules.get("fastparallel.pools")
    if pools is not None:
        try:
            pools.shutdown()
        except Exception:
            pass
