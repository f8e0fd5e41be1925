"""A pool of worker processes, each with its own channels, that notices and survives crashes.

Because every worker has its own channel and the pool decides which worker gets which
chunk, the pool always knows what a dead worker was running. A shared slot per worker
holds the input index of the item in progress (and, with ``item_timeout``, when it
started), so a crash is pinned on one item, and an overdue item's worker is killed.

Every call brings the caller's context (working directory, ``sys.path``, environment,
``sys.argv``) to workers that have an older one, so warm workers behave like fresh
ones; the pool remembers the chunk sizes measured for recent calls.

Busy workers can be killed (fail-fast, timeouts, Ctrl-C, a closed generator); the pool
replaces dead workers on its next use. Workers leave the pool in one way: stopped (asked
to exit, or killed), then joined.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections import OrderedDict, deque
from collections.abc import Hashable
from typing import TYPE_CHECKING

from fastparallel import logs
from fastparallel.backends.base import (
    Chunk,
    Done,
    Measured,
    Outcome,
    PoolSpec,
    Requeue,
    Split,
    Started,
)
from fastparallel.backends.native_threads import worker_variables
from fastparallel.backends.processes.crashes import crash_outcome, timeout_outcome
from fastparallel.backends.processes.fds import wait_ready
from fastparallel.backends.processes.launch import (
    Launcher,
    MultiprocessingLauncher,
    WorkerProcess,
    make_launcher,
    needed_modules,
)
from fastparallel.backends.processes.memory import MemoryGovernor, memory_budget
from fastparallel.backends.processes.wire.channel import (
    BuffersLost,
    descriptor_room,
    send_with_buffers,
)
from fastparallel.backends.processes.wire.protocol import (
    OUT_OF_BAND,
    ChunkHeader,
    ContextTracker,
    DoneHeader,
    Kind,
    LostHeader,
    StartedHeader,
    StartStage,
    decode,
    decode_result,
    encode,
    encode_items,
    pickle_for_workers,
    setup_message,
)
from fastparallel.backends.processes.wire.remote_errors import unpack_exception
from fastparallel.backends.runner import Call
from fastparallel.backends.slots import (
    NO_ITEM,
    STARTING,
    RunningItem,
    is_overdue,
    next_deadline,
    running_item,
)
from fastparallel.cpus import num_cpus, rss
from fastparallel.errors import start_crash_error, worker_start_error
from fastparallel.serialize.pickling import MAX_OUT_OF_BAND, loads

if TYPE_CHECKING:
    from fastparallel.backends.processes.wire.channel import Broadcast
    from fastparallel.options import Options

__all__ = ["ProcessPool", "RecentMeasurements", "pool_spec"]


_JOIN_SECONDS = 2.0
# A dead worker's exit status (what its error says: "killed by SIGKILL") comes once it is
# reaped, by this process or the template; on a loaded machine that took over a second.
# The wait ends as soon as it comes.
_EXIT_STATUS_SECONDS = 10.0
_REMEMBERED_CALLS = 8  # calls whose chunk measurements a warm pool keeps
_REMEMBERED_BLOB_BYTES = 1 << 16  # larger pickled calls are remembered while they stay current


class RecentMeasurements:
    """What was measured for the last few calls, by a key that tells calls apart (the
    least recently used is forgotten first)."""

    def __init__(self, size: int = _REMEMBERED_CALLS):
        self._size = size
        self._by_key: OrderedDict[Hashable, Measured] = OrderedDict()

    def get(self, key: Hashable) -> Measured:
        """The record for ``key`` (a new one if none), now the most recently used."""
        measured = self._by_key.pop(key, None) or Measured()
        self._by_key[key] = measured
        while len(self._by_key) > self._size:
            self._by_key.popitem(last=False)
        return measured


class _PoolProcess:
    """A worker process and the chunks it holds, in the order it runs them."""

    __slots__ = (
        "assigned",
        "call_version",
        "chunks",
        "context_version",
        "process",
        "rss_before",
        "stopped",
    )

    def __init__(self, process: WorkerProcess):
        self.process = process
        self.chunks: dict[int, Chunk] = {}
        self.call_version = -1  # which pickled call it has (see ProcessPool.begin)
        self.context_version = -1  # which caller's context it has (see ProcessPool.begin)
        self.assigned = 0  # items sent to it over its life (for max_tasks_per_child)
        self.stopped = False
        self.rss_before = 0  # max_memory: its RSS between items, as last known


def _running(worker: _PoolProcess, now: float) -> RunningItem | None:
    """The item ``worker`` runs: of its first chunk, the one it is running."""
    chunk = next(iter(worker.chunks.values()), None)
    return running_item(worker.process.current_item, chunk, now)


def _passable_fds() -> int:
    """How many descriptors a worker may pass with one DONE: half of this process's room
    under its ``RLIMIT_NOFILE`` soft limit (the rest of the process keeps the other half),
    at most what one message can pass. A result with more large buffers comes through
    the pipe: the kernel would drop the descriptors this process has no room for."""
    room = descriptor_room()
    passable = min(MAX_OUT_OF_BAND, room // 2)
    if passable < MAX_OUT_OF_BAND:
        logs.debug(
            "fastparallel: %d descriptors free under RLIMIT_NOFILE: a result with more than "
            "%d large buffers comes through the pipe rather than in shared memory",
            room,
            passable,
        )
    return passable


class ProcessPool:
    """Worker processes started by ``launcher``; serves one call at a time."""

    chunks_per_worker = 2
    short_chunks_per_worker = 8  # the dispatcher queues more chunks when they are short
    reports_starts = True
    runs_on_poll = False

    def __init__(
        self,
        launcher: Launcher,
        init_blob: bytes | None = None,
        max_tasks_per_child: int | None = None,
    ):
        self._launcher = launcher
        self._init_blob = init_blob
        self._max_tasks = max_tasks_per_child
        self._workers: list[_PoolProcess] = []  # alive, or dead and not yet noticed
        self._active: list[_PoolProcess] = []  # those this call uses
        self._stopping: list[_PoolProcess] = []  # asked to exit or killed, not yet joined
        self._setup: Broadcast | None = (
            None  # the last call's SETUP message (fn, args, kwargs pickled)
        )
        self._call_version = 0  # bumped when the pickled call changes: workers get it once
        self._context = ContextTracker()  # the caller's working directory, sys.path, environment
        self._sizes = RecentMeasurements()  # recent calls' chunk measurements
        self._stop_on_error = True
        self._report_starts = False
        self._item_timeout: float | None = None
        self._max_fds = MAX_OUT_OF_BAND  # descriptors a DONE may pass (see _passable_fds)
        self._items_out_of_band = OUT_OF_BAND  # false once a worker could not take them
        self._n_workers = 0
        self._memory: MemoryGovernor | None = None  # this call's, where memory is known
        self._pending: deque[Chunk] = deque()  # submitted, held back until memory allows
        self._closed = False
        self._killed_at_exit = False
        self._announced = ""  # how workers start, as last logged
        self._wake: tuple[int, int] | None = None  # a pipe that ends poll() early: see wake()

    def wake(self) -> None:
        """End the :meth:`poll` in progress in another thread (or the next one) now, with
        the outcomes so far: for an owner that other threads hand work to
        (``fastparallel.Executor``'s manager). Its first call, by the polling thread,
        sets up the pipe; the owner never calls it after :meth:`shutdown`."""
        if self._wake is None:
            read, write = os.pipe()
            os.set_blocking(write, False)
            self._wake = (read, write)
            return
        with contextlib.suppress(BlockingIOError):  # full: poll() wakes anyway
            os.write(self._wake[1], b"w")

    def _close_wake(self) -> None:
        if self._wake is not None:
            for fd in self._wake:
                os.close(fd)
            self._wake = None

    # -- workers -------------------------------------------------------------------
    def _start_worker(self) -> _PoolProcess:
        if self._killed_at_exit:
            raise SystemExit("fastparallel: the interpreter is exiting")
        worker = _PoolProcess(self._launcher.start())
        self._workers.append(worker)
        self._active.append(worker)
        # Before anything else: the initializer may need the caller's sys.path.
        outbox = worker.process.outbox
        try:
            outbox.send(encode(Kind.CONTEXT), self._context.message)
            worker.context_version = self._context.version
            if self._init_blob is not None:
                outbox.send(encode(Kind.INIT), self._init_blob)
        except OSError:
            pass  # it died already: poll() sees its sentinel
        return worker

    def _stop_worker(self, worker: _PoolProcess, kill: bool) -> None:
        """Take ``worker`` out of the pool: ask it to exit after its current work, or kill it."""
        worker.stopped = True
        if worker in self._workers:
            self._workers.remove(worker)
        if worker in self._active:
            self._active.remove(worker)
        if kill:
            if worker.process.is_alive():
                worker.process.kill()
        else:
            with contextlib.suppress(OSError):
                worker.process.outbox.send(encode(Kind.STOP))
        self._stopping.append(worker)

    def _join_stopped(self, block: bool = False) -> None:
        """Join and release stopped workers (``block``: wait, then kill the stragglers)."""
        still: list[_PoolProcess] = []
        deadline = time.monotonic() + _JOIN_SECONDS
        for worker in self._stopping:
            process = worker.process
            process.join(max(0.0, deadline - time.monotonic()) if block else 0)
            if process.is_alive() and block:
                process.kill()
                process.join(1.0)
            if process.is_alive():
                still.append(worker)
            elif not self._killed_at_exit:  # else multiprocessing's exit code may be joining it
                process.close()
        self._stopping = still

    @property
    def reusable(self) -> bool:
        return not self._closed and not self._launcher.forks

    def shutdown(self) -> None:
        """Stop every worker (waits up to about two seconds, then kills)."""
        self._closed = True
        if self._setup is not None:
            self._setup.close()
        for worker in list(self._workers):
            self._stop_worker(worker, kill=False)
        self._join_stopped(block=True)
        self._close_wake()

    def kill_at_exit(self) -> None:
        """At interpreter exit, for a pool still in use (an open generator, a daemon
        thread): kill every worker so that nothing waits for them."""
        self._closed = self._killed_at_exit = True
        for worker in self._workers:
            try:
                worker.process.kill()
                worker.process.join(1.0)
            except (OSError, ValueError):
                pass

    # -- one call --------------------------------------------------------------------
    def begin(self, call: Call, n_workers: int, options: Options) -> Measured | None:
        """Pickle the call (sent to each worker once), take the caller's context, and start
        missing workers; returns the chunk measurements remembered for this call."""
        starting = len(self._workers) < n_workers
        if starting:
            # Before pickling: the template may import cloudpickle meanwhile.
            self._launcher.expect(call.fn)
        previous, self._setup = self._setup, setup_message(tuple(call), self._launcher.forks)
        body = self._setup.pickled.body
        if starting:
            self._announce(n_workers)
            self._launcher.preload(needed_modules(body))
        # Out of band, equal pickles may stand for different arrays (and the last ones' memory is gone).
        if (
            previous is None
            or previous.out_of_band
            or self._setup.out_of_band
            or body != previous.pickled.body
        ):
            self._call_version += 1
        self._context.refresh(thread_variables(options, n_workers))
        self._max_fds = _passable_fds()
        self._items_out_of_band = OUT_OF_BAND
        self._stop_on_error = options.stop_chunk_on_error
        self._report_starts = bool(options.pause)
        self._item_timeout = options.item_timeout
        self._n_workers = n_workers
        self._join_stopped()
        for worker in list(self._workers):
            if not worker.process.is_alive():
                self._stop_worker(worker, kill=False)
            elif (
                worker.process.current_item[0] >= 0
            ):  # an earlier call's item: item_timeout must not see it
                worker.process.current_item[0] = NO_ITEM
        self._active = self._workers[:n_workers]
        # A large pickled call is not hashed: it is remembered while it stays the current one.
        measured = self._sizes.get(
            body if len(body) <= _REMEMBERED_BLOB_BYTES else self._call_version
        )
        self._memory = self._govern_memory(options, n_workers)
        if self._memory is not None:
            self._memory.remember(measured)
        while len(self._active) < n_workers:
            self._start_worker()
        # With max_tasks_per_child, sizes also decide when workers are replaced: a remembered
        # size right after the one-item first chunks would leave allowances unused.
        return None if self._max_tasks is not None else measured

    def _govern_memory(self, options: Options, n_workers: int) -> MemoryGovernor | None:
        """This call's memory governor: None where there is no budget to keep (the
        memory available cannot be read)."""
        held = sum(rss(w.process.pid) or 0 for w in self._active)
        given = options.max_memory  # bytes: Options parsed a size given as a string
        budget = memory_budget(given if isinstance(given, int) else None, held)
        return None if budget is None else MemoryGovernor(budget, n_workers, given is None)

    def _announce(self, n_workers: int) -> None:
        """Say how workers start, once per pool and again when that changes."""
        how = self._launcher.describe()
        if how != self._announced:
            self._announced = how
            logs.info("processes: %d workers start as %s", n_workers, how)

    def forget_in_child(self) -> None:
        """In a child forked from the caller: close this pool's descriptors (without telling
        the workers anything), so that the workers still see the caller's end."""
        for worker in [*self._workers, *self._stopping]:
            with contextlib.suppress(OSError, ValueError, BufferError):
                worker.process.forget_in_child()
        if self._setup is not None:
            self._setup.close()
        self._workers = []
        self._active = []
        self._stopping = []
        self._closed = True

    def _fits(self, worker: _PoolProcess, size: int) -> bool:
        """Whether ``worker`` may take ``size`` more items under ``max_tasks_per_child``."""
        return (
            self._max_tasks is None
            or not worker.assigned
            or worker.assigned + size <= self._max_tasks
        )

    def _pick(self, size: int, per_worker: int = short_chunks_per_worker) -> _PoolProcess:
        """The least loaded worker that can take a chunk of ``size`` items (holding fewer
        than ``per_worker`` chunks); starts one if needed."""
        for worker in list(self._active):
            if not worker.chunks and not self._fits(worker, size):
                self._stop_worker(worker, kill=False)  # max_tasks_per_child reached: replace it
        candidates = [w for w in self._active if len(w.chunks) < per_worker and self._fits(w, size)]
        if len(self._active) < self._n_workers or not candidates:
            return self._start_worker()
        # Of equally loaded workers, the one whose running chunk is oldest: it is likely
        # to be free first (chunk ids grow in submission order).
        return min(candidates, key=lambda w: (len(w.chunks), next(iter(w.chunks), -1)))

    def _pick_within_memory(self, size: int) -> _PoolProcess | None:
        """max_memory: the worker for a chunk of ``size`` items, or None while starting
        another item would not fit (the busy workers' memory is read first)."""
        memory = self._memory
        assert memory is not None
        busy = self._sample_busy(memory)
        if memory.queues:
            return self._pick(size)
        if len(busy) >= memory.allowed:
            return None
        return self._pick(size, per_worker=1)

    def _sample_busy(self, memory: MemoryGovernor) -> list[_PoolProcess]:
        """The busy workers; their RSS is read when a read is due (items measured as
        they run)."""
        busy = [w for w in self._active if w.chunks]
        if memory.sample_due(time.monotonic()):
            memory.running([(w.rss_before, rss(w.process.pid) or 0) for w in busy])
        return busy

    def _release_pending(self) -> None:
        """max_memory: send held-back chunks while another item fits."""
        while self._pending:
            worker = self._pick_within_memory(len(self._pending[0].items))
            if worker is None:
                return
            self._send(self._pending.popleft(), worker)

    def submit(self, chunk: Chunk) -> None:
        memory = self._memory
        if memory is not None and memory.ample and not self._pending:
            self._sample_busy(memory)  # a long item may turn out larger than the others
        if memory is None or memory.ample and not self._pending:
            self._send(chunk, self._pick(len(chunk.items)))
        else:
            self._pending.append(chunk)
            self._release_pending()

    def _send(self, chunk: Chunk, worker: _PoolProcess) -> None:
        pickled, has_bad_items = encode_items(
            chunk, self._stop_on_error, self._launcher.forks, self._items_out_of_band
        )
        if self._memory is not None and not worker.rss_before:  # later: as the worker reports
            worker.rss_before = rss(worker.process.pid) or 0
        worker.chunks[chunk.id] = chunk
        worker.assigned += len(chunk.items)
        outbox = worker.process.outbox
        try:
            if worker.context_version != self._context.version:
                outbox.send(encode(Kind.CONTEXT), self._context.message)
                worker.context_version = self._context.version
            if worker.call_version != self._call_version:
                assert self._setup is not None
                self._setup.send(outbox, self._items_out_of_band)
                worker.call_version = self._call_version
            header = ChunkHeader(
                chunk.id,
                chunk.start,
                self._stop_on_error,
                has_bad_items,
                self._n_workers,
                self._report_starts,
                self._item_timeout is not None,
                self._max_fds,
                self._memory is not None and self._memory.measure_next(),
            )
            send_with_buffers(outbox, encode(Kind.CHUNK, header), pickled)
        except OSError:
            pass  # the worker died; poll() sees its sentinel and requeues or reports the chunk

    def poll(self, timeout: float | None) -> list[Outcome]:
        if self._pending:  # workers killed since (item_timeout) left room
            self._release_pending()
        handles: dict[int, _PoolProcess] = {}  # file descriptors: results, and death
        for worker in self._workers:
            if worker.chunks:
                handles[worker.process.inbox.fd] = worker
                handles[worker.process.sentinel] = worker
        wake = [] if self._wake is None else [self._wake[0]]
        outcomes: list[Outcome] = []
        for handle in wait_ready([*handles, *wake], timeout):
            if handle not in handles:  # woken: drain the pipe
                os.read(handle, 4096)
                continue
            worker = handles[handle]
            if worker.stopped:
                continue
            self._receive(worker, outcomes)  # results it sent before dying still count
            if handle != worker.process.inbox.fd:
                self._worker_died(worker, outcomes)
        if self._pending:
            self._release_pending()
        return outcomes

    def _receive(self, worker: _PoolProcess, outcomes: list[Outcome]) -> None:
        inbox = worker.process.inbox
        try:
            while not worker.stopped and wait_ready([inbox.fd], 0):
                try:
                    frame, buffers = inbox.recv()
                except BuffersLost as lost:
                    self._buffers_lost(worker, lost, outcomes)
                    continue
                kind, header, body = decode(frame)
                if kind == Kind.DONE:
                    assert isinstance(header, DoneHeader)
                    self._chunk_done(worker, header, body, buffers, outcomes)
                elif kind == Kind.LOST:  # the worker is short of descriptors
                    assert isinstance(header, LostHeader)
                    self._resend_in_band(worker, header.chunk_id, outcomes)
                elif kind == Kind.STARTED:
                    assert isinstance(header, StartedHeader)
                    outcomes.append(Started(worker.chunks[header.chunk_id], header.time))
                else:  # INIT_FAILED
                    self._closed = True  # its replacements would fail alike
                    stage, packed = loads(body)
                    raise worker_start_error(unpack_exception(packed), StartStage(stage).name)
        except (EOFError, OSError):
            self._worker_died(worker, outcomes)

    def _buffers_lost(
        self, worker: _PoolProcess, lost: BuffersLost, outcomes: list[Outcome]
    ) -> None:
        """A DONE whose buffers the kernel dropped (this process is at its limit of open
        files): the chunk runs again, and this call's results come through the pipe."""
        kind, header, _ = decode(lost.frame)
        if kind != Kind.DONE:  # only DONE passes buffers
            raise lost
        assert isinstance(header, DoneHeader)
        self._max_fds = 0
        logs.debug(
            "fastparallel: %s; the chunk runs again, and this call's results come through "
            "the pipe rather than in shared memory",
            lost,
        )
        outcomes.append(Requeue(worker.chunks.pop(header.chunk_id)))

    def _resend_in_band(self, worker: _PoolProcess, chunk_id: int, outcomes: list[Outcome]) -> None:
        """A chunk whose buffers (or its call's) a worker could not take, at its limit of
        open files: it goes again, after the call, and this call's items and the call
        itself go through the pipe."""
        chunk = worker.chunks.pop(chunk_id)
        self._items_out_of_band = False
        worker.call_version = -1  # it may have lost the call's buffers: it gets the call again
        logs.debug(
            "fastparallel: a worker process was short of file descriptors for the shared "
            "memory of %d items: this call's items go through the pipe",
            len(chunk.items),
        )
        outcomes.append(Requeue(chunk))

    def _chunk_done(
        self,
        worker: _PoolProcess,
        header: DoneHeader,
        body: memoryview,
        buffers: list[memoryview],
        outcomes: list[Outcome],
    ) -> None:
        chunk = worker.chunks.pop(header.chunk_id)
        if self._memory is not None:
            self._memory.chunk_done(header.rss_start, header.rss_peak)
            worker.rss_before = header.rss_start or worker.rss_before
        result = decode_result(body, chunk, self._stop_on_error, buffers)
        if result is None:
            outcomes.append(Split(chunk))
        else:
            outcomes.append(
                Done(chunk, result.values, result.errors, header.seconds, result.nbytes)
            )
        if self._max_tasks is not None and worker.assigned >= self._max_tasks and not worker.chunks:
            self._stop_worker(worker, kill=False)

    def _worker_died(self, worker: _PoolProcess, outcomes: list[Outcome]) -> None:
        """A worker died: report the chunk it was running, requeue the ones it had not started."""
        if worker.stopped:
            return
        if self._killed_at_exit:
            # The interpreter exits under a call still running in a daemon thread; end that
            # thread quietly (threads ignore SystemExit) rather than report dead workers.
            raise SystemExit("fastparallel: the interpreter is exiting")
        worker.process.join(_EXIT_STATUS_SECONDS)
        if worker.process.current_item[0] == STARTING:
            self._closed = True  # its replacements would fail alike
            raise start_crash_error(worker.process.pid, worker.process.exitcode())
        chunks = list(worker.chunks.values())
        memory = self._memory
        short = memory is not None and memory.killed_for_memory(worker.process.exitcode())
        crashed: list[Outcome] = [crash_outcome(worker.process, chunks[0], short)] if chunks else []
        self._lose(worker, crashed, outcomes)

    def _lose(self, worker: _PoolProcess, running: list[Outcome], outcomes: list[Outcome]) -> None:
        """Kill ``worker`` (dead, or overdue): report ``running``, requeue the chunks it had not started."""
        outcomes.extend([*running, *(Requeue(c) for c in list(worker.chunks.values())[1:])])
        worker.chunks.clear()
        self._stop_worker(worker, kill=True)

    def item_deadline(self) -> float | None:
        now = time.monotonic()
        return next_deadline([_running(w, now) for w in self._workers], self._item_timeout, now)

    def expire(self, now: float) -> list[Outcome]:
        """Kill the workers whose item is overdue (they are replaced on the next submit)."""
        limit = self._item_timeout
        outcomes: list[Outcome] = []
        for worker in list(self._workers):
            if not is_overdue(_running(worker, now), limit, now):
                continue
            self._receive(worker, outcomes)  # a result that came in meanwhile still counts
            running = _running(worker, now)
            if running is not None and limit is not None and is_overdue(running, limit, now):
                self._lose(worker, [timeout_outcome(worker.process, running, limit)], outcomes)
        return outcomes

    def abort(self) -> None:
        """Kill every worker that is running or holding chunks of this call."""
        self._pending.clear()
        for worker in list(self._workers):
            if worker.chunks:
                worker.chunks.clear()
                self._stop_worker(worker, kill=True)
        self._join_stopped(block=True)

    def end(self) -> None:
        self._active = []
        self._pending.clear()
        self._memory = None
        if self._setup is not None:
            self._setup.close()  # the call's shared memory
        if self._max_tasks is not None:
            for worker in list(self._workers):
                if worker.assigned >= self._max_tasks and not worker.chunks:
                    self._stop_worker(worker, kill=False)
        self._join_stopped()


def thread_variables(options: Options, n_workers: int) -> dict[str, str]:
    """The native thread pools' sizes in the workers' environment: ``inner_threads``, or
    the CPUs shared out among the workers where the caller's environment does not say."""
    default = max(1, num_cpus() // max(1, n_workers))
    return worker_variables(options.inner_threads, default, os.environ)


def pool_spec(options: Options) -> PoolSpec:
    """A warm process pool for this start method, initializer and ``max_tasks_per_child``."""
    launcher, method_key = make_launcher(options.method)
    init_blob = None
    if options.initializer is not None:
        init_blob = pickle_for_workers(
            (options.initializer, options.initargs), "initializer and initargs", launcher.forks
        )
    key = ("processes", method_key, init_blob, options.max_tasks_per_child)
    # multiprocessing joins its children at exit: ours must be stopped first
    joins = isinstance(launcher, MultiprocessingLauncher)
    return PoolSpec(
        key, lambda: ProcessPool(launcher, init_blob, options.max_tasks_per_child), joins
    )
