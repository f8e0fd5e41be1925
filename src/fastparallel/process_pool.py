"""A pool of worker processes, each with its own pipe, that notices and survives crashes.

Because every worker has its own pipe and the caller decides which worker gets which
chunk, the pool always knows what a dead worker was running. A shared integer per
worker holds the input index of the item in progress, so a crash is pinned on one item.

Busy workers can be killed (fail-fast, timeouts, Ctrl-C, a closed generator); the pool
replaces dead workers on its next use.
"""

from __future__ import annotations

import logging
import multiprocessing.context
import time
from multiprocessing.connection import wait
from typing import Any

from .backend import Crashed, Outcome, Requeue
from .chunking import Chunk
from .errors import (
    ITEM_NOT_PICKLABLE,
    add_note,
    describe_exit,
    describe_item,
    initializer_error,
    pack_exception,
    unpack_exception,
    worker_died_error,
)
from .serialization import dumps, loads
from .worker import Unpicklable, decode_result, worker_main

__all__ = ["ProcessPool"]

log = logging.getLogger("fastparallel")

_PREFETCH = 2  # chunks sent ahead to each worker, so it never idles between chunks
_JOIN_SECONDS = 2.0

def _enlarge_pipe(conn: Any, size: int = 1 << 20) -> None:
    """Grow a pipe's buffer (Linux) so that writes rarely block on a busy reader."""
    try:
        import fcntl

        fcntl.fcntl(conn.fileno(), getattr(fcntl, "F_SETPIPE_SZ", 1031), size)
    except (ImportError, OSError):
        pass


def _pickle_header(header: tuple[Any, ...]) -> bytes:
    import pickle

    return pickle.dumps(header, protocol=pickle.HIGHEST_PROTOCOL)


class _Worker:
    __slots__ = ("process", "conn", "sender", "slot", "inflight", "payload_key", "assigned", "dead")

    def __init__(self, process: Any, conn: Any, sender: Any, slot: Any):
        self.process = process
        self.conn = conn  # results come in here
        self.sender = sender  # chunks go out here
        self.slot = slot
        self.inflight: dict[int, Chunk] = {}
        self.payload_key = -1
        self.assigned = 0
        self.dead = False


class ProcessPool:
    """Worker processes started from ``ctx``; serves one call at a time."""

    def __init__(self, ctx: Any, init_blob: bytes | None = None, max_tasks_per_child: int | None = None):
        self._ctx = ctx
        # Forked workers see the caller's state as of their fork: such a pool serves one
        # call only (like fastcore's), and may receive __main__ objects by reference.
        self.forks = ctx.get_start_method() == "fork"
        self._init_blob = init_blob
        self._max_tasks = max_tasks_per_child
        self._workers: list[_Worker] = []
        self._active: list[_Worker] = []
        self._retired: list[_Worker] = []
        self._payload: bytes | None = None
        self._payload_key = 0
        self._stop_on_error = True
        self._closed = False
        self._killed_at_exit = False
        self._n_workers = 0

    # -- workers -------------------------------------------------------------------
    def _spawn(self) -> _Worker:
        # One pipe each way, enlarged: a chunk or a result rarely has to wait for room.
        inbound, to_worker = self._ctx.Pipe(duplex=False)
        from_worker, outbound = self._ctx.Pipe(duplex=False)
        _enlarge_pipe(to_worker)
        _enlarge_pipe(outbound)
        slot = self._ctx.RawArray("q", 1)
        slot[0] = -1
        process = self._ctx.Process(
            target=worker_main,
            args=(inbound, outbound, slot, self._init_blob),
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
        inbound.close()
        outbound.close()
        log.debug("started worker process %s", process.pid)
        return _Worker(process, from_worker, to_worker, slot)

    def _discard(self, worker: _Worker, kill: bool) -> None:
        worker.dead = True
        if worker in self._workers:
            self._workers.remove(worker)
        if worker in self._active:
            self._active.remove(worker)
        if kill and worker.process.is_alive():
            worker.process.kill()
        self._retired.append(worker)

    def _reap(self, block: bool = False) -> None:
        """Join and release workers that were stopped or killed."""
        still: list[_Worker] = []
        deadline = time.monotonic() + _JOIN_SECONDS
        for worker in self._retired:
            worker.process.join(max(0.0, deadline - time.monotonic()) if block else 0)
            if worker.process.exitcode is None:
                if block:
                    worker.process.kill()
                    worker.process.join(1.0)
                if worker.process.exitcode is None:
                    still.append(worker)
                    continue
            if self._killed_at_exit:
                continue  # multiprocessing's exit code may be joining it right now: leave it open
            worker.conn.close()
            worker.sender.close()
            worker.process.close()
        self._retired = still

    def _retire(self, worker: _Worker) -> None:
        try:
            worker.sender.send_bytes(_pickle_header(("stop",)))
        except OSError:
            pass
        self._discard(worker, kill=False)

    @property
    def reusable(self) -> bool:
        return not self._closed

    def shutdown(self) -> None:
        """Stop every worker (waits up to about two seconds, then kills)."""
        self._closed = True
        for worker in list(self._workers):
            self._retire(worker)
        self._reap(block=True)

    def kill_at_exit(self) -> None:
        """At interpreter exit, for a pool still in use (an open generator, a daemon
        thread): kill every worker so that nothing waits for them."""
        self._closed = self._killed_at_exit = True
        for worker in list(self._workers):
            try:
                worker.process.kill()
            except (OSError, ValueError):
                pass
        for worker in list(self._workers):
            try:
                worker.process.join(1.0)
            except (OSError, ValueError):
                pass

    # -- one call --------------------------------------------------------------------
    def begin(self, payload: bytes, n_workers: int, stop_on_error: bool) -> None:
        """Prepare for a call: ``payload`` is the pickled ``(fn, args, kwargs)``."""
        if payload != self._payload:
            self._payload = payload
            self._payload_key += 1
        self._stop_on_error = stop_on_error
        self._n_workers = n_workers
        self._reap()
        for worker in list(self._workers):
            if not worker.process.is_alive():
                self._discard(worker, kill=False)
        while len(self._workers) < n_workers:
            self._workers.append(self._spawn())
        self._active = self._workers[:n_workers]

    def capacity(self) -> int:
        return _PREFETCH * self._n_workers - sum(len(w.inflight) for w in self._active)

    def _fits(self, worker: _Worker, size: int) -> bool:
        """Whether ``worker`` may take ``size`` more items under ``max_tasks_per_child``."""
        return self._max_tasks is None or not worker.assigned or worker.assigned + size <= self._max_tasks

    def _pick(self, size: int) -> _Worker:
        """The least loaded worker that can take a chunk of ``size`` items; starts one if needed."""
        for worker in list(self._active):
            if not worker.inflight and not self._fits(worker, size):
                self._retire(worker)  # max_tasks_per_child reached: replace it
        candidates = [w for w in self._active if len(w.inflight) < _PREFETCH and self._fits(w, size)]
        if len(self._active) < self._n_workers or not candidates:
            worker = self._spawn()
            self._workers.append(worker)
            self._active.append(worker)
            return worker
        return min(candidates, key=lambda w: len(w.inflight))

    def _pickle_items(self, chunk: Chunk) -> tuple[bytes, bool]:
        try:
            return dumps(chunk.items, self.forks), False
        except Exception:
            pass
        items: list[Any] = []
        for offset, item in enumerate(chunk.items):
            try:
                dumps(item)
                items.append(item)
            except Exception as exc:
                where = describe_item(chunk.start + offset, item)
                if self._stop_on_error:
                    add_note(exc, ITEM_NOT_PICKLABLE.format(where=where))
                    raise
                items.append(Unpicklable(pack_exception(exc, dumps)))
        return dumps(items, self.forks), True

    def submit(self, chunk: Chunk) -> None:
        body, has_bad_items = self._pickle_items(chunk)
        worker = self._pick(len(chunk.items))
        worker.inflight[chunk.id] = chunk
        worker.assigned += len(chunk.items)
        try:
            if worker.payload_key != self._payload_key:
                assert self._payload is not None
                worker.sender.send_bytes(_pickle_header(("setup", self._payload_key)))
                worker.sender.send_bytes(self._payload)
                worker.payload_key = self._payload_key
            header = ("chunk", chunk.id, self._payload_key, chunk.start, self._stop_on_error, has_bad_items,
                      self._n_workers)
            worker.sender.send_bytes(_pickle_header(header))
            worker.sender.send_bytes(body)
        except OSError:
            pass  # the worker died; poll() sees its sentinel and requeues or reports the chunk

    def poll(self, timeout: float | None) -> list[Outcome]:
        handles: dict[Any, _Worker] = {}
        for worker in self._workers:
            if worker.inflight:
                handles[worker.conn] = worker
                handles[worker.process.sentinel] = worker
        if not handles:
            return []
        outcomes: list[Outcome] = []
        for handle in wait(list(handles), timeout):
            worker = handles[handle]
            if worker.dead:
                continue
            if handle is worker.conn:
                self._receive(worker, outcomes)
            else:
                self._receive(worker, outcomes)  # results it sent before dying still count
                self._bury(worker, outcomes)
        return outcomes

    def _receive(self, worker: _Worker, outcomes: list[Outcome]) -> None:
        conn = worker.conn
        try:
            while not worker.dead and conn.poll():
                header = loads(conn.recv_bytes())
                body = conn.recv_bytes()
                if header[0] == "done":
                    self._done(worker, header[1], header[2], body, outcomes)
                else:  # "init_failed"
                    self._closed = True
                    raise initializer_error(unpack_exception(loads(body)), "a worker process")
        except (EOFError, OSError):
            self._bury(worker, outcomes)

    def _done(self, worker: _Worker, chunk_id: int, seconds: float, body: bytes,
              outcomes: list[Outcome]) -> None:
        chunk = worker.inflight.pop(chunk_id)
        outcomes.append(decode_result(body, chunk, seconds, self._stop_on_error))
        if self._max_tasks is not None and worker.assigned >= self._max_tasks and not worker.inflight:
            self._retire(worker)

    def _bury(self, worker: _Worker, outcomes: list[Outcome]) -> None:
        """A worker died: report the chunk it was running, requeue the ones it had not started."""
        if worker.dead:
            return
        if self._killed_at_exit:
            # The interpreter exits under a call still running in a daemon thread; end that
            # thread quietly (threads ignore SystemExit) rather than report dead workers.
            raise SystemExit("fastparallel: the interpreter is exiting")
        worker.process.join(1.0)
        exitcode = worker.process.exitcode
        self._discard(worker, kill=True)
        chunks = list(worker.inflight.values())
        worker.inflight.clear()
        if not chunks:
            return
        running, waiting = chunks[0], chunks[1:]
        index = worker.slot[0]
        culprit: int | None = index - running.start if 0 <= index - running.start < len(running.items) else None
        if culprit is not None:
            what = describe_item(running.start + culprit, running.items[culprit])
            indices: tuple[int, ...] = (running.start + culprit,)
        else:
            last = running.start + len(running.items) - 1
            what = f"items {running.start}-{last} (first: {describe_item(running.start, running.items[0])})"
            indices = tuple(range(running.start, last + 1))
        error = worker_died_error()(
            f"a worker process (pid {worker.process.pid}) {describe_exit(exitcode)} while running {what}",
            indices,
            exitcode,
        )
        log.info("%s", error)
        outcomes.append(Crashed(running, culprit, error))
        outcomes.extend(Requeue(c) for c in waiting)

    def abort(self) -> None:
        """Kill every worker that is running or holding chunks of this call."""
        for worker in list(self._workers):
            if worker.inflight:
                worker.inflight.clear()
                self._discard(worker, kill=True)
        self._reap(block=True)

    def end(self) -> None:
        self._active = []
        if self._max_tasks is not None:
            for worker in list(self._workers):
                if worker.assigned >= self._max_tasks and not worker.inflight:
                    self._retire(worker)
        self._reap()
