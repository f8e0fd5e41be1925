"""``n_workers=0``: run chunks one after another in the calling thread.

Same dispatcher, same error handling, progress and ``return_as`` as the pools; only the
place where ``fn`` runs differs. A Ctrl-C during ``fn`` is a real Ctrl-C here and is
let through as ``KeyboardInterrupt``.
"""

from __future__ import annotations

from collections import deque

from .backend import Done, Outcome
from .chunking import Chunk
from .errors import item_error
from .tasks import Call, run_chunk

__all__ = ["SerialBackend"]


class SerialBackend:
    def __init__(self) -> None:
        self._queue: deque[Chunk] = deque()
        self._call: Call | None = None
        self._stop_on_error = True

    def begin(self, call: Call, n_workers: int, stop_on_error: bool) -> None:
        self._call = call
        self._stop_on_error = stop_on_error

    def capacity(self) -> int:
        return 1 - len(self._queue)

    def submit(self, chunk: Chunk) -> None:
        self._queue.append(chunk)

    def poll(self, timeout: float | None) -> list[Outcome]:
        if not self._queue:
            return []
        assert self._call is not None
        chunk = self._queue.popleft()
        run = run_chunk(self._call, chunk.items, chunk.start, self._stop_on_error, propagate_interrupt=True)
        errors = [(o, item_error(e, chunk.start + o, chunk.items[o])) for o, e in run.errors]
        return [Done(chunk, run.values, errors, run.seconds)]

    def abort(self) -> None:
        self._queue.clear()

    def end(self) -> None:
        self._queue.clear()
        self._call = None
