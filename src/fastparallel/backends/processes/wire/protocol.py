"""The wire format between the caller and a worker process: frames, messages, results.

A :class:`Channel` carries frames over one end of a pipe: an 8-byte length, then the
frame. A frame is a message: its :class:`Kind` (one byte), a fixed header for that kind
(a :mod:`struct`, decoded into a NamedTuple), then an optional body::

    caller -> worker   CONTEXT                                 body: pickled Context
                       INIT                                    body: pickled (initializer, initargs)
                       SETUP                                   body: pickled (fn, args, kwargs)
                       CHUNK  ChunkHeader(chunk_id, start, stop_on_error, has_bad_items,
                                          pool_size, report_start, timed, max_fds,
                                          measure_memory)
                                                               body: pickled list of items
                       STOP
    worker -> caller   STARTED StartedHeader(chunk_id, time)   (only if report_start: pause)
                       LOST   LostHeader(chunk_id)   the chunk's buffers were dropped: send it in band
                       DONE   DoneHeader(chunk_id, seconds, rss_start, rss_peak)
                                                               body: pickled (values, errors)
                       INIT_FAILED                             body: pickled (StartStage, packed exception)

A new worker first gets CONTEXT (the caller's working directory, ``sys.path``,
environment and ``sys.argv``), then INIT if the pool has an initializer; a warm worker
gets CONTEXT again before a call whenever the caller's context has changed.

``errors`` in a DONE body lists ``(offset, ErrorKind, packed exception)``. The caller
reads a DONE body with :func:`decode_result`: the values and the rebuilt exceptions
(:class:`ChunkResult`), or None when the chunk must run again item by item.
"""

from __future__ import annotations

import os
import struct
import sys
from collections import namedtuple
from enum import IntEnum

from fastparallel.backends.processes.wire.channel import Broadcast, Pickled, can_pass_buffers
from fastparallel.backends.processes.wire.remote_errors import (
    ITEM_NOT_PICKLABLE,
    ErrorKind,
    pack_exception,
    remote_item_error,
)
from fastparallel.errors import add_note, deliverable, describe_item
from fastparallel.serialize.pickling import MAX_OUT_OF_BAND, dumps, dumps_values, loads

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence
    from pickle import PickleBuffer
    from typing import Any, NamedTuple

    from fastparallel.backends.base import Chunk
    from fastparallel.backends.processes.wire.remote_errors import PackedException

__all__ = [
    "OUT_OF_BAND",
    "ChunkHeader",
    "ChunkResult",
    "Context",
    "ContextTracker",
    "DoneHeader",
    "Kind",
    "LostHeader",
    "StartStage",
    "StartedHeader",
    "Unpicklable",
    "capture_context",
    "decode",
    "decode_result",
    "encode",
    "encode_items",
    "encode_result",
    "pickle_for_workers",
    "setup_message",
]

OUT_OF_BAND = can_pass_buffers()  # large buffers travel by shared memory, not the pipe


class Kind(IntEnum):
    """The kind of a message: the first byte of every frame."""

    SETUP = 1
    CHUNK = 2
    STOP = 3
    DONE = 4
    INIT_FAILED = 5
    CONTEXT = 6
    INIT = 7
    STARTED = 8
    LOST = 9


class StartStage(IntEnum):
    """Where a worker's start failed (the first part of an INIT_FAILED body)."""

    CONTEXT = 1  # taking over the caller's context
    LOAD = 2  # unpickling the initializer and its arguments
    RUN = 3  # running the initializer
    FORK = 4  # setting itself up right after the fork (template workers)


# At run time the headers are plain collections.namedtuple classes: worker processes
# import this module, and should not pay for importing typing (see calls.py).
if TYPE_CHECKING:

    class ChunkHeader(NamedTuple):
        chunk_id: int
        start: int  # input index of the chunk's first item
        stop_on_error: bool
        has_bad_items: bool  # some items are Unpicklable stand-ins
        pool_size: int  # workers in the pool: nested pools share the machine
        report_start: bool = False  # pause: send STARTED right before calling fn
        timed: bool = False  # item_timeout: write each item's start time into the slot
        # The most descriptors the DONE may pass (the caller's room under RLIMIT_NOFILE);
        # results with more large buffers come through the pipe.
        max_fds: int = MAX_OUT_OF_BAND
        measure_memory: bool = False  # report the RSS at the chunk's start and its peak

    class StartedHeader(NamedTuple):
        chunk_id: int
        time: float  # time.monotonic() when the chunk's item started (system-wide clock)

    class LostHeader(NamedTuple):
        chunk_id: int  # a chunk whose descriptors the worker could not take (RLIMIT_NOFILE)

    class DoneHeader(NamedTuple):
        chunk_id: int
        seconds: float  # time spent calling fn
        rss_start: int = 0  # measure_memory: the worker's RSS when the chunk started (bytes)
        rss_peak: int = 0  # measure_memory: its peak RSS while the chunk ran (0: unknown)

    class ChunkResult(NamedTuple):
        """A chunk's results as the caller reads them from a DONE body: ``values[i]`` for
        item ``i`` (None where it failed), ``errors`` as ``(offset, exception)`` ready to
        raise, and the size of the pickled results."""

        values: list[Any]
        errors: list[tuple[int, BaseException]]
        nbytes: int

    class Context(NamedTuple):
        """What a worker takes over from the caller before running a call's items."""

        cwd: str | None  # None: the caller's working directory no longer exists
        path: list[str]  # sys.path
        environ: dict[str, str]
        argv: list[str]
        warnings: tuple[WarningFilter, ...]  # the caller's warnings filters, first first
else:
    ChunkHeader = namedtuple(
        "ChunkHeader",
        "chunk_id start stop_on_error has_bad_items pool_size report_start timed max_fds "
        "measure_memory",
        defaults=(False, False, MAX_OUT_OF_BAND, False),
        module=__name__,
    )
    StartedHeader = namedtuple("StartedHeader", "chunk_id time", module=__name__)
    DoneHeader = namedtuple(
        "DoneHeader", "chunk_id seconds rss_start rss_peak", defaults=(0, 0), module=__name__
    )
    LostHeader = namedtuple("LostHeader", "chunk_id", module=__name__)
    Context = namedtuple("Context", "cwd path environ argv warnings", module=__name__)
    ChunkResult = namedtuple("ChunkResult", "values errors nbytes", module=__name__)


_environ_copy: tuple[object, dict[str, str]] = (
    None,
    {},
)  # os.environ's raw data, and its decoded copy


def capture_context() -> Context:
    """The calling process's context, now (cheap: a few copies, one system call)."""
    global _environ_copy
    try:
        cwd: str | None = os.getcwd()
    except OSError:
        cwd = None
    # Decoding every variable costs ~100 us; comparing os.environ's raw dict costs ~1 us.
    raw = getattr(os.environ, "_data", None)
    seen, environ = _environ_copy
    if raw is None or raw != seen:
        environ = dict(os.environ)
        _environ_copy = (None if raw is None else dict(raw), environ)
    return Context(cwd, list(sys.path), environ, list(sys.argv), _warning_filters())


# (action, message pattern, category's module and qualified name, module pattern, lineno):
# the arguments of warnings.filterwarnings, so that a worker rebuilds them with the public API.
if TYPE_CHECKING:
    WarningFilter = tuple[str, str, tuple[str, str], str, int]
_filters_copy: tuple[list[Any], tuple[WarningFilter, ...]] = ([], ())


def _warning_filters() -> tuple[WarningFilter, ...]:
    """``warnings.filters`` as plain values (converted again only when they changed)."""
    global _filters_copy
    warnings = sys.modules.get("warnings")
    filters = [] if warnings is None else warnings.filters
    seen, plain = _filters_copy
    if filters != seen:
        plain = tuple(
            (
                action,
                _pattern(message),
                (category.__module__, category.__qualname__),
                _pattern(module),
                lineno,
            )
            for action, message, category, module, lineno in filters
        )
        _filters_copy = (list(filters), plain)
    return plain


def _pattern(match: Any) -> str:
    """A filter's message or module as a pattern: a compiled one's, or an exact string's
    (the interpreter's own default filters name modules so)."""
    if match is None:
        return ""
    if isinstance(match, str):
        import re

        return re.escape(match) + r"\Z"
    return str(match.pattern)


class ContextTracker:
    """A pool's copy of the caller's context: the CONTEXT message body, and its version.

    :meth:`refresh` at the start of every call; a worker whose version differs gets the
    message before the call's chunks.
    """

    def __init__(self) -> None:
        self.context: Context | None = None
        self.message = b""  # the pickled context
        self.version = 0  # bumped when the caller's context changes

    def refresh(self, environ: dict[str, str] | None = None) -> None:
        """Capture the caller's context again; ``environ``: variables that the workers'
        environment holds beside the caller's (the native thread pools' sizes)."""
        context = capture_context()
        if environ:
            context = context._replace(environ={**context.environ, **environ})
        if context != self.context:
            self.context = context
            # Plain strings, lists and tuples: the default warnings filter's module
            # "__main__" must not send it through the by-value pickler (and its import).
            self.message = dumps(tuple(context), main_by_reference=True)
            self.version += 1


_HEADERS: dict[Kind, tuple[struct.Struct, type[Any]]] = {
    Kind.CHUNK: (struct.Struct("<BqqBBIBBHB"), ChunkHeader),
    Kind.DONE: (struct.Struct("<Bqdqq"), DoneHeader),
    Kind.STARTED: (struct.Struct("<Bqd"), StartedHeader),
    Kind.LOST: (struct.Struct("<Bq"), LostHeader),
}
_BARE = struct.Struct("<B")
if TYPE_CHECKING:
    Header = ChunkHeader | DoneHeader | StartedHeader | LostHeader | None


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
        return kind, None, memoryview(frame)[_BARE.size :]
    layout, cls = _HEADERS[kind]
    header = cls(*layout.unpack_from(frame)[1:])
    return kind, header, memoryview(frame)[layout.size :]


# -- bodies: the call and items pickled in the caller, results in the worker -----------------


class Unpicklable:
    """Stands in a chunk for an input item that could not be pickled; carries the error."""

    def __init__(self, packed: PackedException):
        self.packed = packed


def pickle_for_workers(
    obj: Any, what: str, forks: bool, buffers: list[PickleBuffer] | None = None
) -> bytes:
    """Pickle ``obj`` for worker processes; on failure, say what could not travel and why.

    ``forks``: the workers are forked from this process during this call, so objects of
    ``__main__`` may travel by reference. ``buffers``: an empty list for the large
    buffers that travel out of band.
    """
    try:
        return dumps(obj, main_by_reference=forks, buffers=buffers)
    except Exception as exc:
        add_note(
            exc,
            f"fastparallel: {what} are sent to worker processes and must be picklable "
            "(cloudpickle); use threadpool=True to keep them in this process",
        )
        raise


def setup_message(call: tuple[Any, ...], forks: bool) -> Broadcast:
    """The SETUP message of a call (``fn, args, kwargs``), pickled once for every worker;
    large arguments travel by shared memory where they can."""
    what = "fn, args and kwargs"
    buffers: list[PickleBuffer] | None = [] if OUT_OF_BAND else None
    body = pickle_for_workers(call, what, forks, buffers)
    return Broadcast(
        encode(Kind.SETUP), Pickled(body, buffers, lambda: pickle_for_workers(call, what, forks))
    )


def _as_list(values: list[Any]) -> list[Any]:
    return values


def encode_items(
    chunk: Chunk, stop_on_error: bool, forks: bool, out_of_band: bool = OUT_OF_BAND
) -> tuple[Pickled, bool]:
    """A chunk's items pickled (large buffers out of band where they can be, unless
    ``out_of_band`` is false), and whether some had to be replaced by :class:`Unpicklable`."""
    buffers: list[PickleBuffer] | None = [] if out_of_band else None
    try:
        body = dumps_values(chunk.items, _as_list, forks, buffers)
        return Pickled(body, buffers, lambda: dumps_values(chunk.items, _as_list, forks)), False
    except Exception:
        pass
    items: list[Any] = []
    for offset, item in enumerate(chunk.items):
        try:
            dumps(item)
            items.append(item)
        except Exception as exc:
            where = describe_item(chunk.start + offset, item)
            if stop_on_error:
                add_note(exc, ITEM_NOT_PICKLABLE.format(where=where))
                raise
            items.append(Unpicklable(pack_exception(exc, dumps)))
    if buffers is not None:
        buffers.clear()  # from the attempt above
    body = dumps_values(items, _as_list, forks, buffers)
    return Pickled(body, buffers, lambda: dumps_values(items, _as_list, forks)), True


if TYPE_CHECKING:
    PackedErrors = list[tuple[int, ErrorKind, PackedException]]


def encode_result(
    values: list[Any], errors: PackedErrors, buffers: list[PickleBuffer] | None = None
) -> bytes:
    """Pickle a chunk's results; results that cannot be pickled become errors in their slot.

    ``buffers``: an empty list for the large buffers that travel out of band.
    """
    try:
        return dumps_values(values, lambda v: (v, errors), buffers=buffers)
    except BaseException:  # even a __reduce__ that raises SystemExit: the results still go
        pass
    errors = list(errors)
    for offset, value in enumerate(values):
        try:
            dumps(value)
        except BaseException as exc:
            values[offset] = None
            errors.append((offset, ErrorKind.RESULT, pack_exception(exc, dumps)))
    return dumps_values(values, lambda v: (v, errors), buffers=buffers)


def decode_result(
    body: bytes | memoryview, chunk: Chunk, stop_on_error: bool, buffers: Sequence[memoryview] = ()
) -> ChunkResult | None:
    """In the caller: the results of ``chunk`` from the body of its DONE message and its
    out-of-band ``buffers``; None when the chunk must run again item by item.

    When the chunk could not be unpickled in the worker, or its results here, the
    culprit is unknown: a chunk of several items is split to run item by item.
    """
    nbytes = memoryview(body).nbytes + sum(b.nbytes for b in buffers)
    try:
        values, packed_errors = loads(body, buffers=buffers)
    except KeyboardInterrupt:  # a real Ctrl-C, here
        raise
    except BaseException as exc:  # even SystemExit from a result's reconstructor
        if len(chunk.items) > 1:
            return None
        where = describe_item(chunk.start, chunk.items[0])
        error = deliverable(exc, f"the result of {where} could not be unpickled in this process")
        return ChunkResult([None], [(0, error)], nbytes)
    errors: list[tuple[int, BaseException]] = []
    for offset, kind, packed in packed_errors:
        offsets: Sequence[int] = [offset]
        if kind == ErrorKind.ITEMS and len(chunk.items) > 1:
            return None
        if kind == ErrorKind.SETUP:  # fn itself could not be unpickled: every item fails alike
            offsets = [0] if stop_on_error else range(len(chunk.items))
            values = [None] * len(offsets)
        for o in offsets:
            errors.append(
                (o, remote_item_error(ErrorKind(kind), packed, chunk.start + o, chunk.items[o]))
            )
    return ChunkResult(values, errors, nbytes)
