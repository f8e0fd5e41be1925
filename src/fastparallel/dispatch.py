"""The dispatch loop: feed chunks to a backend, collect outcomes, enforce the rules.

One loop serves every backend. It reads the input lazily (never more than the backend
can take, plus a bounded window when results must come out in order), applies
``pause``, the deadline, fail-fast and ``return_exceptions``, re-runs the items of a
crashed chunk one by one, reports progress, and yields finished pieces as
``(start_index, values)``.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterator
from typing import Any

from .backend import Backend, Crashed, Done, Requeue, Split
from .chunking import Chunk, ChunkReader, ChunkSizer
from .errors import ParallelTimeoutError, add_note
from .progress import Progress

__all__ = ["dispatch"]

Piece = tuple[int, list[Any]]


def input_error(exc: BaseException, reader: ChunkReader) -> BaseException:
    add_note(exc, f"fastparallel: raised by the input iterable after {reader.read} items were read")
    return exc


def dispatch(
    backend: Backend,
    reader: ChunkReader,
    sizer: ChunkSizer,
    *,
    n_workers: int,
    head: list[Chunk],
    ordered: bool,
    window: int | None,
    return_exceptions: bool,
    deadline: float | None,
    timeout: float | None,
    pause: float,
    progress: Progress | None,
    total: int | None,
) -> Iterator[Piece]:
    """Run every chunk of ``reader`` (after the already-read ``head``) on ``backend``.

    Args:
        ordered: yield pieces in input order (else as they finish).
        window: with ``ordered``, at most this many chunks may be read ahead of the
            first piece not yet yielded (bounds memory of a streamed result).
        deadline: ``time.monotonic()`` value past which the call fails with
            :class:`~fastparallel.ParallelTimeoutError`.
    """
    todo: deque[Chunk] = deque(head)  # read or requeued chunks not yet submitted
    inflight: dict[int, Chunk] = {}
    parked: dict[int, list[Any]] = {}  # ordered mode: finished pieces waiting for earlier ones
    next_start = 0
    done_items = 0
    max_inflight = n_workers if pause else None
    next_start_time = 0.0
    ok = False
    try:
        while True:
            # 1. Submit while the backend has room.
            now = time.monotonic()
            while backend.capacity() > 0 and (max_inflight is None or len(inflight) < max_inflight):
                if pause and now < next_start_time:
                    break
                if todo:
                    chunk = todo.popleft()
                else:
                    if ordered and window is not None and len(inflight) + len(parked) >= window:
                        break
                    try:
                        next_chunk = reader.next_chunk()
                    except Exception as exc:
                        raise input_error(exc, reader) from None
                    if next_chunk is None:
                        break
                    chunk = next_chunk
                backend.submit(chunk)
                inflight[chunk.id] = chunk
                if pause:
                    now = time.monotonic()
                    next_start_time = now + pause
            if not inflight:
                if todo or not reader.exhausted:
                    time.sleep(max(0.0, next_start_time - time.monotonic()))
                    continue
                break

            # 2. Wait for outcomes, no longer than the deadline or the next paused start.
            wait: float | None = None
            if deadline is not None:
                wait = deadline - time.monotonic()
                if wait <= 0:
                    raise ParallelTimeoutError(_timeout_message(timeout, done_items, total, reader))
            if pause and (todo or not reader.exhausted):
                until_start = max(0.0, next_start_time - time.monotonic())
                wait = until_start if wait is None else min(wait, until_start)
            outcomes = backend.poll(wait)

            # 3. Handle them.
            for outcome in outcomes:
                chunk = outcome.chunk
                inflight.pop(chunk.id, None)
                if isinstance(outcome, Requeue):
                    todo.appendleft(chunk)
                    continue
                if isinstance(outcome, Split):
                    todo.extend(_singles(reader, chunk))
                    continue
                pieces: list[Piece]
                if isinstance(outcome, Done):
                    values, errors = outcome.values, outcome.errors
                    sizer.record(len(values), outcome.seconds, outcome.nbytes)
                    if errors:
                        if not return_exceptions:
                            raise min(errors, key=lambda e: e[0])[1]
                        for offset, error in errors:
                            values[offset] = error
                    pieces = [(chunk.start, values)]
                else:
                    assert isinstance(outcome, Crashed)
                    if not return_exceptions:
                        raise outcome.error
                    culprit = outcome.culprit
                    if culprit is None and len(chunk.items) == 1:
                        culprit = 0
                    pieces = [] if culprit is None else [(chunk.start + culprit, [outcome.error])]
                    # The rest of the chunk runs again, one item at a time, so that a second
                    # crash is pinned on exactly one item.
                    todo.extend(_singles(reader, chunk, skip=culprit))
                for start, values in pieces:
                    done_items += len(values)
                    if ordered:
                        parked[start] = values
                        while next_start in parked:
                            ready = parked.pop(next_start)
                            next_start += len(ready)
                            yield next_start - len(ready), ready
                    else:
                        yield start, values
                if progress is not None:
                    progress.update(done_items)

            if deadline is not None and not outcomes and time.monotonic() >= deadline:
                raise ParallelTimeoutError(_timeout_message(timeout, done_items, total, reader))
        ok = True
    except BaseException:
        backend.abort()
        raise
    finally:
        if progress is not None:
            progress.close(ok)


def _singles(reader: ChunkReader, chunk: Chunk, skip: int | None = None) -> list[Chunk]:
    """The items of ``chunk`` (but ``skip``) as one-item chunks, to run each on its own."""
    return [reader.single(chunk.start + o, item) for o, item in enumerate(chunk.items) if o != skip]


def _timeout_message(timeout: float | None, done: int, total: int | None, reader: ChunkReader) -> str:
    of = total if total is not None else (reader.read if reader.exhausted else None)
    count = f"{done} of {of}" if of is not None else f"{done}"
    return f"parallel() did not finish within timeout={timeout}s: {count} items finished"
