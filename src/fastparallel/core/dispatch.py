"""The dispatch loop: feed chunks to a backend, collect outcomes, enforce the rules.

One loop serves every backend. :func:`run` reads the first chunks (an empty or short
input starts no pool, or a smaller one), checks a backend out and hands it to a
:class:`Dispatcher`, which repeats three steps until every item is done: submit while
there is room, wait for outcomes, handle each outcome. It reads the input lazily (never
more than the backend can take, plus a bounded window when results must come out in
order), applies ``pause``, the deadline, ``item_timeout`` (the backend tells when the
next running item is due and gives up on overdue ones), retries (:mod:`.retries`),
fail-fast and ``return_exceptions``, re-runs the items of a crashed chunk one by one,
reports progress, and yields finished pieces as ``(start_index, values)``.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterator
from typing import Any

from fastparallel import logs
from fastparallel.backends import native_threads, registry
from fastparallel.backends.base import (
    Backend,
    Chunk,
    Crashed,
    Done,
    Outcome,
    Requeue,
    Split,
    Started,
)
from fastparallel.backends.runner import Call
from fastparallel.core import pools
from fastparallel.core.chunking import ChunkReader, ChunkSizer
from fastparallel.core.progress import Progress, make_progress
from fastparallel.core.retries import RetryQueue
from fastparallel.errors import ItemTimeoutError, ParallelTimeoutError, add_note
from fastparallel.options import BackendName, Options

__all__ = ["Dispatcher", "Piece", "run"]

Piece = tuple[int, list[Any]]
MAX_WAIT = 3600.0  # seconds of one wait for outcomes, at most
# Work queued per worker when chunks are short: a worker that finishes a chunk of 0.3 ms
# would otherwise idle until the dispatcher is scheduled again (milliseconds on a busy
# machine), and more queued than this could leave one worker behind the others.
QUEUED_SECONDS = 0.005


def input_error(exc: BaseException, reader: ChunkReader) -> BaseException:
    add_note(exc, f"fastparallel: raised by the input iterable after {reader.read} items were read")
    return exc


def _read_head(reader: ChunkReader, count: int) -> list[Chunk]:
    """Up to ``count`` chunks, read before anything starts."""
    head: list[Chunk] = []
    try:
        while len(head) < count:
            chunk = reader.next_chunk()
            if chunk is None:
                break
            head.append(chunk)
    except Exception as exc:
        raise input_error(exc, reader) from None
    return head


def _backend_name(options: Options) -> BackendName:
    if options.backend in ("threads", "processes") and pools.exiting():
        logs.warning("parallel() called while the interpreter exits: running serially")
        return "serial"
    return options.backend


def run(
    call: Call, items: Iterator[Any], options: Options, *, ordered: bool, streaming: bool
) -> Iterator[Piece]:
    """Run ``call`` over ``items``; yields pieces (in input order if ``ordered``).

    With ``threadpool="auto"`` the first chunks run in :func:`.auto.choose`'s probe, which
    chooses the mode; the chunks it ran come first, to a backend that knows their outcomes.
    """
    deadline = None if options.timeout is None else time.monotonic() + options.timeout
    reader = ChunkReader(items)
    handoff = None
    if options.auto:
        from fastparallel.auto.choose import choose  # only for threadpool="auto"

        handoff = choose(call, reader, options, deadline, pools.has_idle("processes"))
        options = handoff.options
    name = _backend_name(options)
    n_workers = 1 if name == "serial" else registry.default_workers(options)
    total = None if options.total is None else max(0, options.total - reader.read)
    if total is not None:
        n_workers = max(1, min(n_workers, total))
    # pause spaces the starts of items, so every chunk holds one item, whatever chunksize says.
    sizer = ChunkSizer(1 if options.pause else options.chunksize, total, n_workers)
    if options.max_tasks_per_child is not None:  # a chunk must fit in one worker's allowance
        sizer.cap = min(sizer.cap, options.max_tasks_per_child)
    reader.sizer = sizer
    head = _read_head(reader, n_workers)  # one chunk per worker
    ran = [] if handoff is None else handoff.chunks  # by auto's probe, or still running there
    if not head and not ran:
        return
    if reader.exhausted:
        n_workers = max(1, len(head))
    if not head:  # the probe read everything: no pool to start
        name = "serial"
    with (
        _native_limits(options, name),
        pools.checkout(registry.pool_spec(name, options)) as backend,
    ):
        if handoff is not None:
            backend = handoff.around(backend)
        # Without a chunk of its own, the backend runs nothing (no initializer either),
        # but a retry of what the probe ran.
        if head or options.retries:
            sizer.resume(backend.begin(call, n_workers, options))
        try:
            # Streamed in order, a slow item holds back the pieces after it; the window
            # bounds how far reading may run ahead of it: a few chunks per worker, so
            # that every worker stays busy, and never fewer than 8.
            window = max(8, 4 * n_workers) if streaming and ordered else None
            dispatcher = Dispatcher(
                backend,
                reader,
                sizer,
                options,
                n_workers=n_workers,
                head=ran + head,
                window=window,
                ordered=ordered,
                deadline=deadline,
                note="" if handoff is None else handoff.note,
            )
            yield from dispatcher.run()
        finally:
            sizer.remember()
            backend.end()


class _native_limits:  # lower case: it reads as the function it replaced
    """``inner_threads`` for a call that runs in this process (threads, serial,
    coroutines): the process's native pools take that size for the call's length.
    (Worker processes get theirs from their environment: see the process pool.)

    A class rather than ``@contextmanager``: the user's exceptions pass through it, and
    contextlib's generator wrapper assigns their ``__traceback__``, which an exception
    that refuses attributes (a frozen dataclass) turns into a ``FrozenInstanceError``.
    """

    __slots__ = ("_limiter", "_name", "_options")

    def __init__(self, options: Options, name: BackendName) -> None:
        self._options = options
        self._name = name
        self._limiter: Any = None

    def __enter__(self) -> None:
        inner_threads = self._options.inner_threads
        if inner_threads is None or self._name in ("processes", "external"):
            return
        self._limiter = native_threads.limit_here(inner_threads)
        if self._limiter is None:
            logs.warning(
                "inner_threads=%d in this process needs threadpoolctl (pip install "
                "threadpoolctl): the native thread pools are left as they are",
                inner_threads,
            )

    def __exit__(self, *exc_info: object) -> None:
        if self._limiter is not None:
            self._limiter.restore_original_limits()
            self._limiter = None


class Dispatcher:
    """Runs every chunk of one call on a backend; :meth:`run` yields the finished pieces."""

    def __init__(
        self,
        backend: Backend,
        reader: ChunkReader,
        sizer: ChunkSizer,
        options: Options,
        *,
        n_workers: int,
        head: list[Chunk],
        window: int | None,
        ordered: bool,
        deadline: float | None,
        note: str = "",
    ):
        self.backend = backend
        self.reader = reader
        self.sizer = sizer
        self.options = options
        self.ordered = ordered
        self.window = window  # ordered streaming: chunks read ahead of the next piece out, at most
        self.deadline = deadline
        self.progress: Progress | None = make_progress(options.progress, options.total)
        self.pause = options.pause or 0.0
        # With pause, one chunk (of one item) per worker: a queued item would start late.
        self.max_inflight = n_workers if self.pause else backend.chunks_per_worker * n_workers
        self.n_workers = n_workers
        # Chunks a worker may hold when they are short (see _inflight_limit).
        self.deepest = 1 if self.pause else getattr(backend, "short_chunks_per_worker", 0)
        self.todo: deque[Chunk] = deque(head)  # read or requeued, not yet submitted
        self.inflight: dict[int, Chunk] = {}  # submitted, no outcome yet
        self.note = note  # for the progress bar: threadpool="auto"'s choice
        self.parked: dict[int, list[Any]] = {}  # ordered: finished pieces waiting for earlier ones
        self.next_out = 0  # ordered: input index of the next item to yield
        self.done_items = 0
        # pause: no submission before this time.monotonic(), nor while the last submitted
        # item has not started (on backends that report starts: see _handle).
        self.next_start_time = 0.0
        self.awaiting_start: int | None = None  # the id of that chunk
        self.item_timeout = options.item_timeout
        self.retry = RetryQueue(options) if options.retries else None
        self.timed_out = 0  # item attempts that ran past item_timeout
        self.out_of_memory: set[int] = set()  # items run again once: the OOM killer hit them
        self.expired = False  # past the deadline: the finished items go out, then it raises

    def run(self) -> Iterator[Piece]:
        ok = False
        if self.progress is not None and self.note:
            self.progress.comment(self.note)
        try:
            while self._submit_while_room():
                for outcome in self._wait():
                    for piece in self._handle(outcome):
                        yield from self._hand_over(piece)
            ok = True
        except BaseException:
            if self.inflight:
                self.backend.abort()
            raise
        finally:
            if self.progress is not None:
                self.progress.close(ok)

    def _hand_over(self, piece: Piece) -> Iterator[Piece]:
        """Yield ``piece``; with a deadline, the time the consumer keeps it (a streamed
        call waits in the consumer's loop) moves the deadline on: ``timeout`` counts the
        time the call waits for its items, not the time the consumer spends on them."""
        if self.deadline is None:
            yield piece
            return
        handed = time.monotonic()
        yield piece
        self.deadline += time.monotonic() - handed

    # -- step 1: submit ------------------------------------------------------------------
    def _more_to_submit(self) -> bool:
        return bool(self.todo) or not self.reader.exhausted or bool(self.retry)

    def _submit_while_room(self) -> bool:
        """Submit chunks while the backend has room; False once every item is done."""
        if self.retry:  # items whose next attempt is due go first
            self.todo.extendleft(reversed(self.retry.due(time.monotonic())))
        pause = self.pause
        limit = self._inflight_limit()
        while len(self.inflight) < limit and not self.expired:
            if pause and (
                self.awaiting_start is not None or time.monotonic() < self.next_start_time
            ):
                break
            chunk = self._next_chunk()
            if chunk is None:
                break
            self.backend.submit(chunk)
            self.inflight[chunk.id] = chunk
            if pause:
                if self.backend.reports_starts:
                    self.awaiting_start = chunk.id
                else:  # best effort: space the submissions
                    self.next_start_time = time.monotonic() + pause
        return bool(self.inflight) or self._more_to_submit()

    def _inflight_limit(self) -> int:
        """Chunks in flight at most: ``chunks_per_worker`` per worker, or, on a backend
        that takes more (``short_chunks_per_worker``), as many short chunks as make
        about ``QUEUED_SECONDS`` of work per worker."""
        seconds = self.sizer.chunk_seconds() if self.deepest else None
        if seconds is None or self.n_workers * self.deepest <= self.max_inflight:
            return self.max_inflight
        per_worker = int(QUEUED_SECONDS / max(seconds, 1e-9))
        return max(self.max_inflight, self.n_workers * min(self.deepest, per_worker))

    def _next_chunk(self) -> Chunk | None:
        if self.todo:
            return self.todo.popleft()
        if (
            self.window is not None
            and len(self.inflight) + len(self.parked) + len(self.retry or ()) >= self.window
        ):
            return None
        try:
            return self.reader.next_chunk()
        except Exception as exc:
            raise input_error(exc, self.reader) from None

    # -- step 2: wait ----------------------------------------------------------------------
    def _wait(self) -> list[Outcome]:
        """Outcomes, waiting no longer than the deadline, the next paused start, the next
        retry or the deadline of the earliest running item (then overdue items fail)."""
        now = time.monotonic()
        if self.deadline is not None and self.deadline <= now:
            # What finished by the deadline is delivered, never dropped; nothing more starts.
            self.expired = True
            collect = self.inflight and not self.backend.runs_on_poll
            finished = self.backend.poll(0) if collect else []
            if finished:
                return finished
            raise ParallelTimeoutError(self._timeout_message())
        wake = [self.deadline]
        if self._paused_start_due():
            wake.append(self.next_start_time)
        if self.retry:
            wake.append(self.retry.next_due())
        if self.item_timeout is not None and self.inflight:
            wake.append(self.backend.item_deadline())
        times = [t for t in wake if t is not None]
        # One wait lasts an hour at most: every platform's waits take that, whatever the
        # timeouts (a deadline a century away is simply never reached).
        timeout = min(MAX_WAIT, max(0.0, min(times) - now)) if times else None
        if not self.inflight:  # nothing runs: only waiting for the next paused start or retry
            time.sleep(timeout or 0.0)
            return []
        outcomes = self.backend.poll(timeout)
        if self.item_timeout is not None:
            outcomes.extend(self.backend.expire(time.monotonic()))
        return outcomes

    def _paused_start_due(self) -> bool:
        """pause: whether the next submission waits only for ``next_start_time``."""
        return (
            bool(self.pause)
            and self.awaiting_start is None
            and len(self.inflight) < self.max_inflight
            and self._more_to_submit()
        )

    def _timeout_message(self) -> str:
        reader = self.reader
        of = (
            self.options.total
            if self.options.total is not None
            else (reader.read if reader.exhausted else None)
        )
        count = f"{self.done_items} of {of}" if of is not None else f"{self.done_items}"
        return f"parallel() did not finish within timeout={self.options.timeout}s: {count} items finished"

    # -- step 3: handle an outcome -------------------------------------------------------
    def _handle(self, outcome: Outcome) -> Iterator[Piece]:
        chunk = outcome.chunk
        if isinstance(outcome, Started):
            self.next_start_time = max(self.next_start_time, outcome.time + self.pause)
            if chunk.id == self.awaiting_start:
                self.awaiting_start = None
            return
        if chunk.id == self.awaiting_start:  # it ended without starting (requeued, crashed first)
            self.awaiting_start = None
        self.inflight.pop(chunk.id, None)
        if isinstance(outcome, Requeue):
            self.todo.appendleft(chunk)
            return
        if isinstance(outcome, Split):
            self.todo.extend(self._singles(chunk))
            return
        pieces = self._finished(outcome) if isinstance(outcome, Done) else self._crashed(outcome)
        for start, values in pieces:
            self.done_items += len(values)
            yield from self._release(start, values)
        if self.progress is not None:
            self.progress.update(self.done_items)

    def _finished(self, outcome: Done) -> list[Piece]:
        chunk, values = outcome.chunk, outcome.values
        self.sizer.record(len(values), outcome.seconds, outcome.nbytes)
        if self.retry is not None and len(chunk.items) == 1 and not outcome.errors:
            self.retry.succeeded(chunk.start)
        if not outcome.errors:
            return [(chunk.start, values)]
        # Items that run again leave a gap: the pieces around them go out now.
        pieces: list[Piece] = []
        begin = 0
        for offset, error in sorted(outcome.errors, key=lambda e: e[0]):
            final = self._failed(chunk, offset, error)
            if final is None:
                pieces.append((chunk.start + begin, values[begin:offset]))
                begin = offset + 1
            else:
                values[offset] = final
        pieces.append((chunk.start + begin, values[begin:]))
        return [piece for piece in pieces if piece[1]]

    def _crashed(self, outcome: Crashed) -> list[Piece]:
        chunk, culprit = outcome.chunk, outcome.culprit
        if culprit is None and len(chunk.items) == 1:
            culprit = 0
        # The rest of the chunk runs again, one item at a time, so that a second crash
        # is pinned on exactly one item.
        if culprit is None:
            if self.options.stop_chunk_on_error:
                raise outcome.error
            self.todo.extend(self._singles(chunk))
            return []
        if self._again_for_memory(chunk.start + culprit, outcome.error):
            self.todo.extend(self._singles(chunk))
            return []
        final = self._failed(chunk, culprit, outcome.error)
        self.todo.extend(self._singles(chunk, skip=culprit))
        return [] if final is None else [(chunk.start + culprit, [final])]

    def _again_for_memory(self, index: int, error: BaseException) -> bool:
        """Whether the item at ``index``, whose worker the OOM killer killed, runs again
        for free: once, without ``retries`` (with them, it is one of its attempts). The
        pool runs fewer items at once by then."""
        if self.retry is not None or not getattr(error, "out_of_memory", False):
            return False
        if index in self.out_of_memory:
            return False
        self.out_of_memory.add(index)
        logs.info("item %d runs again, with fewer items at once: %s", index, error)
        return True

    def _failed(self, chunk: Chunk, offset: int, error: BaseException) -> BaseException | None:
        """An attempt of the item at ``offset`` in ``chunk`` raised ``error``: None if the
        item runs again; else its final error, raised here when that ends the call."""
        index, item = chunk.start + offset, chunk.items[offset]
        if isinstance(error, ItemTimeoutError):
            self.timed_out += 1
            logs.info("%s", error)
        final: BaseException | None = error
        if self.retry is not None:
            final = self.retry.failed(
                index, item, error, time.monotonic(), lambda: self.reader.single(index, item)
            )
        if self.progress is not None and (self.retry is not None or self.timed_out):
            self.progress.comment(self._comment())
        if final is not None and self.options.stop_on_error:
            raise final
        return final

    def _comment(self) -> str:
        """``"3 retried, 1 timed out"``: for the progress bar (after auto's choice, if any)."""
        parts = [self.note] if self.note else []
        if self.retry is not None and self.retry.retried:
            parts.append(f"{self.retry.retried} retried")
        if self.timed_out:
            parts.append(f"{self.timed_out} timed out")
        return ", ".join(parts)

    def _singles(self, chunk: Chunk, skip: int | None = None) -> list[Chunk]:
        """The items of ``chunk`` (but ``skip``) as one-item chunks, to run each on its own."""
        return [
            self.reader.single(chunk.start + o, item)
            for o, item in enumerate(chunk.items)
            if o != skip
        ]

    def _release(self, start: int, values: list[Any]) -> Iterator[Piece]:
        """Yield a finished piece, or park it until the pieces before it are out (ordered)."""
        if not self.ordered:
            yield start, values
            return
        self.parked[start] = values
        while self.next_out in self.parked:
            ready = self.parked.pop(self.next_out)
            yield self.next_out, ready
            self.next_out += len(ready)
