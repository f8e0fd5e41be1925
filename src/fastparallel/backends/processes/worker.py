"""The code a worker process runs: receive chunks, run them, send results back.

It runs in the child only and imports only what a worker needs (the wire format in
:mod:`.protocol`, the per-item loop, pickling): the template process imports it once
and every worker forked from it starts with it loaded. A reader thread drains the
inbound channel into a queue, so the caller's sends never block on a worker that is
busy sending a large result (no pipe deadlock). The same thread ends the worker when
the caller goes away: end of file on the channel, or a new parent process id.

A worker starts with the caller's context (CONTEXT) and the initializer (INIT); until
then its current-item slot holds :data:`~fastparallel.backends.slots.STARTING`, so that a worker that dies while
starting is reported as one that could not start, not as a crash of an item.

:func:`run_packed` is also what an external executor's worker runs for one chunk.
"""

from __future__ import annotations

import contextlib
import faulthandler
import importlib
import os
import queue
import signal
import sys
import threading
import time

from fastparallel import cpus
from fastparallel.backends import native_threads
from fastparallel.backends.processes.wire.channel import (
    BuffersLost,
    Channel,
    Pickled,
    channel_from,
    send_with_buffers,
)
from fastparallel.backends.processes.wire.protocol import (
    ChunkHeader,
    Context,
    DoneHeader,
    Kind,
    LostHeader,
    StartedHeader,
    StartStage,
    Unpicklable,
    decode,
    encode,
    encode_result,
)
from fastparallel.backends.processes.wire.remote_errors import ErrorKind, pack_exception
from fastparallel.backends.runner import Call, run_chunk
from fastparallel.backends.slots import NO_ITEM
from fastparallel.serialize.pickling import dumps, loads
from fastparallel.worker_state import at_fork_in_child, mark_fork_safe

TYPE_CHECKING = False  # no typing at run time: it would add ~10 ms to every worker start
if TYPE_CHECKING:
    from pickle import PickleBuffer
    from typing import Any, NoReturn

    from fastparallel.backends.processes.wire.protocol import PackedErrors
    from fastparallel.backends.runner import CurrentItem

    # a frame and its out-of-band buffers (or why they were lost)
    Received = tuple[bytearray, list[memoryview] | BuffersLost]

__all__ = [
    "apply_context",
    "process_main",
    "report_start_failure",
    "run_items",
    "run_packed",
    "serve",
]

_PARENT_CHECK_SECONDS = 0.25
_native_limits = None  # threadpoolctl's limiter for the pools loaded before the context came

# True in a child process that fn forked and that returned into this loop: it runs no
# more items, reports nothing and exits (the worker itself goes on).
_forked = [False]
_held: list[int] = []  # the worker's descriptors: closed in such a child


def _after_fork_in_child() -> None:
    _forked[0] = True
    for fd in _held:
        try:  # noqa: SIM105 - no contextlib in worker processes (its import costs every start)
            os.close(fd)
        except OSError:
            pass
    _held.clear()


def run_items(
    call: Call | BaseException,
    items: list[Any],
    start: int,
    stop_on_error: bool,
    has_bad_items: bool = False,
    current_item: CurrentItem | None = None,
    timed: bool = False,
) -> tuple[list[Any], PackedErrors, float]:
    """Run a chunk; returns its values, its packed errors and the seconds ``fn`` took.

    ``call`` is the exception raised while unpickling the call, if it could not be.
    """
    if isinstance(call, BaseException):
        return [None], [(0, ErrorKind.SETUP, pack_exception(call, dumps))], 0.0
    if not has_bad_items:
        run = run_chunk(
            call,
            items,
            start,
            stop_on_error,
            current_item=current_item,
            cancelled=_forked,
            timed=timed,
        )
        return (
            run.values,
            [(o, ErrorKind.FN, pack_exception(e, dumps)) for o, e in run.errors],
            run.seconds,
        )
    values: list[Any] = []
    errors: PackedErrors = []
    seconds = 0.0
    for offset, item in enumerate(items):
        if isinstance(item, Unpicklable):
            values.append(None)
            errors.append((offset, ErrorKind.ITEM, item.packed))
        else:
            run = run_chunk(
                call,
                [item],
                start + offset,
                stop_on_error,
                current_item=current_item,
                cancelled=_forked,
                timed=timed,
            )
            values.extend(run.values)
            errors.extend((offset, ErrorKind.FN, pack_exception(e, dumps)) for _, e in run.errors)
            seconds += run.seconds
        if errors and stop_on_error:
            break
    return values, errors, seconds


def run_packed(
    call: Call | BaseException, items: list[Any], start: int, stop_on_error: bool
) -> tuple[bytes, float]:
    """Run a chunk for an external executor; returns the pickled ``(values, errors)`` (all in
    band: its workers cannot receive shared memory) and the seconds ``fn`` took."""
    values, errors, seconds = run_items(call, items, start, stop_on_error)
    return encode_result(values, errors), seconds


def _read_inbound(inbound: Channel, inbox: queue.SimpleQueue[Received], parent_pid: int) -> None:
    import select

    try:
        while True:
            ready, _, _ = select.select([inbound], [], [], _PARENT_CHECK_SECONDS)
            if ready:
                inbox.put(_receive(inbound))
            elif os.getppid() != parent_pid:
                break
    except (EOFError, OSError):
        pass  # the caller went away
    except BaseException:
        # Anything else (an import that fails as shared memory is first mapped): this
        # worker can no longer hear the caller. It says why and ends, so that the caller
        # sees a dead worker and fails (or retries) its chunk instead of waiting forever.
        import traceback

        traceback.print_exc()
        _exit_now(1)
    _exit_now()


def _receive(inbound: Channel) -> Received:
    """The next message and its buffers; for one whose buffers were dropped (this worker
    is at its limit of open files), the :class:`BuffersLost` in their place, once this
    worker has raised its soft limit as far as it may (a CHUNK is then sent again in
    band; a SETUP fails every item of its call with it)."""
    try:
        return inbound.recv()
    except BuffersLost as lost:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft != hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        return lost.frame, lost


def _or_raise(buffers: list[memoryview] | BuffersLost) -> list[memoryview]:
    if isinstance(buffers, BuffersLost):
        raise buffers
    return buffers


def _always() -> bool:
    return True


def _exit_now(code: int = 0) -> NoReturn:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


def _run_initializer(body: memoryview, outbound: Channel) -> None:
    stage = StartStage.LOAD
    try:
        initializer, initargs = loads(body)
        stage = StartStage.RUN
        initializer(*initargs)
    except BaseException as exc:
        report_start_failure(outbound, exc, stage)


def report_start_failure(outbound: Channel, exc: BaseException, stage: StartStage) -> NoReturn:
    """Tell the caller that this worker could not start, and why; then exit."""
    with contextlib.suppress(OSError):
        outbound.send(encode(Kind.INIT_FAILED), dumps((stage, pack_exception(exc, dumps))))
    _exit_now(1)


def apply_context(body: memoryview, inherited: bool = False) -> None:
    """Take over the caller's working directory, ``sys.path``, environment, ``sys.argv``
    and warnings filters.

    The first context is taken whole; a later one brings only what the caller changed
    since the previous one, so that what the initializer (or ``fn``) set in this worker
    (a variable, a ``sys.path`` entry, the working directory) lasts for its life.
    ``inherited``: this worker was forked from the caller a moment ago, so its import
    caches and warnings filters are the caller's already (applying them again costs 5 to
    15 ms in a process that imported PyTorch).
    """
    context = Context(*loads(body))
    last = _received[0]
    _received[0] = context
    if last is None or context.cwd != last.cwd:
        _change_directory(context.cwd)
    if last is None or context.path != last.path:
        own = [] if last is None else [p for p in sys.path if p not in last.path]
        sys.path[:] = own + [p for p in context.path if p not in own]
    if last is None or context.argv != last.argv:
        sys.argv[:] = context.argv
    _apply_environ(context.environ, None if last is None else last.environ)
    if last is None or _thread_variables_changed(context.environ, last.environ):
        global _native_limits
        # pools loaded before: resized (their threads stopped, on a worker's first context)
        _native_limits = native_threads.limit_loaded(os.environ, starting=last is None)
    if inherited:
        return
    if last is None or context.warnings != last.warnings:
        _apply_warnings(context.warnings)
    importlib.invalidate_caches()  # modules written since the last call are found


_received: list[Context | None] = [None]  # the last context the caller sent


def _thread_variables_changed(new: dict[str, str], last: dict[str, str]) -> bool:
    return any(new.get(name) != last.get(name) for name in native_threads.VARIABLES)


def _change_directory(cwd: str | None) -> None:
    if cwd is not None:
        try:  # noqa: SIM105 - no contextlib in worker processes (its import costs every start)
            os.chdir(cwd)
        except OSError:
            pass  # removed or unreachable: relative paths fail as they would in the caller


def _apply_environ(new: dict[str, str], last: dict[str, str] | None) -> None:
    """The caller's environment: all of it the first time, then what changed in it."""
    environ = os.environ
    before = environ if last is None else last
    for name in [name for name in before if name not in new]:
        environ.pop(name, None)
    for name, value in new.items():
        if (last is None or last.get(name) != value) and environ.get(name) != value:
            environ[name] = value


def _apply_warnings(filters: tuple[Any, ...]) -> None:
    """The caller's warnings filters (those whose category cannot be found here are left out)."""
    import warnings

    warnings.resetwarnings()
    for action, message, (module_name, qualname), module, lineno in reversed(filters):
        category: Any = sys.modules.get(module_name)
        for part in qualname.split("."):
            category = getattr(category, part, None)
        if isinstance(category, type) and issubclass(category, Warning):
            warnings.filterwarnings(action, message, category, module, lineno)


def _run_chunk_message(
    call: Call | BaseException,
    header: ChunkHeader,
    body: memoryview,
    buffers: list[memoryview],
    current_item: memoryview,
    outbound: Channel,
) -> tuple[list[Any], PackedErrors, float]:
    cpus.set_enclosing_pool_size(header.pool_size)
    current_item[0] = (
        NO_ITEM  # nothing of this chunk runs yet (a crash while unpickling blames no item)
    )
    try:
        items = loads(body, buffers=buffers)
    except BaseException as exc:
        return [None], [(0, ErrorKind.ITEMS, pack_exception(exc, dumps))], 0.0
    if header.report_start:  # pause: the caller releases the next item from this time on
        outbound.send(encode(Kind.STARTED, StartedHeader(header.chunk_id, time.monotonic())))
    return run_items(
        call,
        items,
        header.start,
        header.stop_on_error,
        header.has_bad_items,
        current_item,
        header.timed,
    )


def _send_done(
    outbound: Channel,
    header: ChunkHeader,
    values: list[Any],
    errors: PackedErrors,
    seconds: float,
    rss_start: int | None,
) -> None:
    """Send a chunk's results; large buffers among them in shared memory where possible:
    at most ``header.max_fds`` of them, else all through the pipe. ``rss_start``: with
    ``measure_memory``, this process's RSS when the chunk started."""
    peak = (cpus.peak_rss() or 0) if rss_start is not None else 0
    head = encode(Kind.DONE, DoneHeader(header.chunk_id, seconds, rss_start or 0, peak))
    if not outbound.passes_buffers or not header.max_fds:
        outbound.send(head, encode_result(values, errors))
        return
    buffers: list[PickleBuffer] = []
    body = encode_result(values, errors, buffers)
    if len(buffers) > header.max_fds:  # more than the caller has room for: through the pipe
        outbound.send(head, encode_result(values, errors))
        return
    send_with_buffers(outbound, head, Pickled(body, buffers, lambda: encode_result(values, errors)))


def _start_measuring() -> int:
    """max_memory: this process's RSS now, from which a new peak starts."""
    cpus.reset_peak_rss()
    return cpus.rss(os.getpid()) or 0


def _start(
    inbound: Channel, outbound: Channel, held: list[int] | None
) -> queue.SimpleQueue[Received]:
    """Make this process a worker: signals, the descriptors a forked ``fn`` must not keep,
    fault reports, and the thread that reads the caller's messages into the inbox returned."""
    # A terminal Ctrl-C goes to the whole process group; only the caller should react.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _forked[0] = False  # a worker forked from a worker starts afresh
    _received[0] = None
    _held[:] = [inbound.fd, outbound.fd, *(held or ())]
    if outbound.passer is not None:
        _held.append(outbound.passer.fileno())
    at_fork_in_child(_after_fork_in_child)
    # On descriptor 2, not sys.stderr: a worker forked from a caller whose sys.stderr was
    # replaced (pytest's capture, a GUI's console) has one without a descriptor.
    faulthandler.enable(file=2)
    inbox: queue.SimpleQueue[Received] = queue.SimpleQueue()
    reader = threading.Thread(
        target=_read_inbound,
        args=(inbound, inbox, os.getppid()),
        daemon=True,
        name="fastparallel-inbound",
    )
    mark_fork_safe(reader, _always)  # it waits in select(), holding nothing: fn may fork
    reader.start()
    return inbox


def serve(
    inbound: Channel,
    outbound: Channel,
    current_item: memoryview,
    held: list[int] | None = None,
    caller_fork: bool = False,
) -> None:
    """The worker's life: take the caller's context, run the initializer, then chunks
    until STOP or the caller goes away.

    ``held``: more descriptors of this worker that a process ``fn`` forks must not keep
    (the channels' are closed there anyway), so that the worker's end is seen.
    ``caller_fork``: this worker was just forked from the caller.
    """
    inbox = _start(inbound, outbound, held)
    call: Call | BaseException = RuntimeError("no SETUP message before the first chunk")
    while True:
        frame, buffers = inbox.get()
        kind, header, body = decode(frame)
        if kind == Kind.CHUNK:
            assert isinstance(header, ChunkHeader)
            # Its buffers, or the call's, were dropped: the caller sends them again, in band.
            if isinstance(buffers, BuffersLost) or isinstance(call, BuffersLost):
                outbound.send(encode(Kind.LOST, LostHeader(header.chunk_id)))
                continue
            rss_start = _start_measuring() if header.measure_memory else None
            values, errors, seconds = _run_chunk_message(
                call, header, body, buffers, current_item, outbound
            )
            del frame, body, buffers
            if _forked[0]:
                _exit_now(0)  # a child of fn's: the worker itself reports this chunk
            _send_done(outbound, header, values, errors, seconds, rss_start)
            del values, errors  # before waiting for the next chunk: release the results' memory
        elif kind == Kind.SETUP:
            current_item[0] = NO_ITEM  # started: a crash from here on is pinned on the call's items
            call = RuntimeError("the call could not be unpickled")  # the previous one goes first
            try:
                call = Call(*loads(body, buffers=_or_raise(buffers)))
            except BaseException as exc:
                call = exc
        elif kind == Kind.CONTEXT:
            try:
                apply_context(body, inherited=caller_fork)
                caller_fork = False  # from the next context on, time has passed
            except BaseException as exc:
                report_start_failure(outbound, exc, StartStage.CONTEXT)
        elif kind == Kind.INIT:
            _run_initializer(body, outbound)
        else:  # STOP
            break
    pools = sys.modules.get("fastparallel.core.pools")
    if pools is not None:
        pools.shutdown()  # pools that fn started in this worker (nested parallel() calls)
    _exit_now(0)


def process_main(inbound: Any, outbound: Any, current_item: Any, passer: Any = None) -> None:
    """Entry point of a worker started by :mod:`multiprocessing` (the ``target`` of its Process).

    ``inbound`` and ``outbound`` are :class:`multiprocessing.connection.Connection` objects
    and ``passer`` a socket (multiprocessing knows how to hand both to a child under every
    start method); ``current_item`` is a two-element shared ``RawArray('q')`` (index, start time).
    """
    slot = memoryview(current_item).cast("B").cast("q")
    serve(channel_from(inbound, passer), channel_from(outbound, passer), slot)
