"""``n_workers=0``: run chunks one after another in the calling thread.

Same dispatcher, same error handling, progress and ``return_as`` as the pools; only the
place where ``fn`` runs differs. A Ctrl-C during ``fn`` is a real Ctrl-C here and is
let through as ``KeyboardInterrupt``. Nothing can interrupt the calling thread either:
with ``item_timeout``, an item that ran past the limit fails when it returns (its result
is dropped), so that the results are the same as on a pool.
"""

from __future__ import annotations

import time
from collections import deque
from typing import TYPE_CHECKING

from fastparallel.backends.base import Chunk, Done, Outcome, PoolSpec, Started
from fastparallel.backends.runner import Call, run_chunk
from fastparallel.errors import initializer_error, item_error, item_timeout_error

if TYPE_CHECKING:
    from fastparallel.options import Options

__all__ = ["SerialBackend", "pool_spec"]

_LATE = "it ran in the calling thread, which nothing can interrupt, and failed when it returned"


class SerialBackend:
    """Runs each submitted chunk in the calling thread when the dispatcher polls."""

    chunks_per_worker = 1
    reports_starts = True
    runs_on_poll = True  # each poll() runs one chunk, here
    reusable = False  # a new one for each call: it holds nothing worth keeping

    def __init__(self) -> None:
        self._queue: deque[Chunk] = deque()
        self._call: Call | None = None
        self._stop_on_error = True
        self._report_starts = False
        self._item_timeout: float | None = None

    def begin(self, call: Call, n_workers: int, options: Options) -> None:
        """Runs the ``initializer``, once, here."""
        self._call = call
        self._stop_on_error = options.stop_chunk_on_error
        self._report_starts = bool(options.pause)
        self._item_timeout = options.item_timeout
        if options.initializer is not None:
            try:
                options.initializer(*options.initargs)
            except KeyboardInterrupt:
                raise  # in the calling thread this is a real Ctrl-C
            except BaseException as exc:
                raise initializer_error(exc, "the serial run") from None

    def submit(self, chunk: Chunk) -> None:
        self._queue.append(chunk)

    def poll(self, timeout: float | None) -> list[Outcome]:
        assert self._call is not None
        chunk = self._queue.popleft()
        started: list[Outcome] = [Started(chunk, time.monotonic())] if self._report_starts else []
        if self._item_timeout is not None:
            return [*started, self._run_timed(self._call, chunk, self._item_timeout)]
        run = run_chunk(
            self._call, chunk.items, chunk.start, self._stop_on_error, propagate_interrupt=True
        )
        errors = [(o, item_error(e, chunk.start + o, chunk.items[o])) for o, e in run.errors]
        return [*started, Done(chunk, run.values, errors, run.seconds)]

    def _run_timed(self, call: Call, chunk: Chunk, limit: float) -> Done:
        """Run ``chunk`` item by item, timing each: one that took longer than ``limit`` fails."""
        values: list[object] = []
        errors: list[tuple[int, BaseException]] = []
        seconds = 0.0
        for offset, item in enumerate(chunk.items):
            index = chunk.start + offset
            run = run_chunk(call, [item], index, True, propagate_interrupt=True)
            seconds += run.seconds
            if run.seconds > limit:
                values.append(None)
                errors.append((offset, item_timeout_error(index, item, limit, _LATE)))
            else:
                values.extend(run.values)
                errors.extend((offset, item_error(e, index, item)) for _, e in run.errors)
            if errors and self._stop_on_error:
                break
        return Done(chunk, values, errors, seconds)

    def item_deadline(self) -> None:
        return None  # enforced when each item returns

    def expire(self, now: float) -> list[Outcome]:
        return []

    def abort(self) -> None:
        self._queue.clear()

    def end(self) -> None:
        self._queue.clear()
        self._call = None

    def shutdown(self) -> None:
        """Nothing runs anywhere but in the calling thread: nothing to stop."""

    def kill_at_exit(self) -> None:
        """Nothing to do: no worker exists."""


def pool_spec(options: Options) -> PoolSpec:
    """A new serial backend for each call."""
    return PoolSpec(None, SerialBackend)
