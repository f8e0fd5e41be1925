"""Splitting the input into chunks, lazily, and choosing how big each chunk is.

A chunk is a run of consecutive items sent to a worker as one unit, so that many tiny
items do not each pay a round trip. With ``chunksize=None`` the size adapts:

* the first chunks hold one item, to measure how long an item takes;
* then each chunk aims at about ``TARGET_SECONDS`` of work;
* when the number of items is known, no chunk exceeds ``n / (4 * workers)``, so a few
  long, uneven items stay spread over all workers;
* when results come back from processes, a chunk's results stay around
  ``TARGET_BYTES``, so that large results stream back while workers compute.

A warm pool remembers what was measured for the same call (:class:`Measured`), so that
a loop of calls over batches sizes its chunks from the first one on instead of
measuring again with one-item chunks.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
from typing import Any

from fastparallel.backends.base import Chunk, Measured

__all__ = ["ChunkReader", "ChunkSizer"]

TARGET_SECONDS = 0.02
TARGET_BYTES = 1 << 20  # results a chunk sends back: large ones travel best a few at a time
MAX_CHUNK = 10_000


class ChunkSizer:
    """Chooses chunk sizes from a fixed ``chunksize`` or from measured item times."""

    def __init__(self, chunksize: int | None, total: int | None, n_workers: int):
        self.fixed = chunksize
        self.cap = (
            MAX_CHUNK
            if total is None
            else max(1, min(MAX_CHUNK, math.ceil(total / (4 * n_workers))))
        )
        self._measured = Measured()  # by this call
        self._memory: Measured | None = None  # by an earlier call of the same function

    def resume(self, memory: Measured | None) -> None:
        """Size chunks from ``memory`` until this call has measured something itself;
        :meth:`remember` writes this call's measurements back into it."""
        self._memory = memory

    def remember(self) -> None:
        memory, measured = self._memory, self._measured
        if memory is not None and measured.items:
            memory.items, memory.seconds, memory.nbytes = (
                measured.items,
                measured.seconds,
                measured.nbytes,
            )

    def record(self, n_items: int, seconds: float, nbytes: int = 0) -> None:
        """Learn from a finished chunk: ``n_items`` items took ``seconds`` of work and
        their results ``nbytes`` pickled bytes."""
        measured = self._measured
        measured.items += n_items
        measured.seconds += seconds
        measured.nbytes += nbytes

    def _known(self) -> Measured:
        """This call's measurements, or an earlier call's until this one has its own."""
        return self._measured if self._measured.items or self._memory is None else self._memory

    def chunk_seconds(self) -> float | None:
        """About how long the next chunk will take, from the measurements; None before any."""
        measured = self._known()
        if not measured.items:
            return None
        return measured.seconds / measured.items * self.next_size()

    def next_size(self) -> int:
        if self.fixed is not None:
            return self.fixed
        measured = self._known()
        if not measured.items:
            return 1
        per_item = measured.seconds / measured.items
        size = self.cap if per_item <= 0 else int(TARGET_SECONDS / per_item)
        if measured.nbytes:
            size = min(size, int(TARGET_BYTES * measured.items / measured.nbytes))
        return max(1, min(self.cap, size))


class ChunkReader:
    """Reads chunks from an iterator on demand; never reads further than asked.

    ``sizer`` chooses the size of each chunk; it may be set later (``threadpool="auto"``
    reads its first chunks, of sizes of its own, before the mode and so the sizer are
    known). An input that raised raises the same exception again when read again.
    """

    def __init__(self, items: Iterator[Any], sizer: ChunkSizer | None = None):
        self._items = items
        self.sizer = sizer
        self._next_id = 0
        self.read = 0  # items read so far
        self.exhausted = False
        self._error: Exception | None = None

    def next_chunk(self, size: int | None = None) -> Chunk | None:
        """The next chunk (of ``size`` items, else as the sizer says), or None when the
        input is exhausted.

        Exceptions raised by the input iterator propagate unchanged.
        """
        if self._error is not None:
            raise self._error
        if self.exhausted:
            return None
        if size is None:
            assert self.sizer is not None, "a chunk size, or a sizer"
            size = self.sizer.next_size()
        try:
            batch = list(itertools.islice(self._items, size))
        except Exception as exc:
            self._error = exc
            raise
        if len(batch) < size:
            self.exhausted = True
        if not batch:
            return None
        chunk = Chunk(self._next_id, self.read, batch)
        self._next_id += 1
        self.read += len(batch)
        return chunk

    def single(self, index: int, item: Any) -> Chunk:
        """A one-item chunk for an item that must run again on its own (after a crash)."""
        chunk = Chunk(self._next_id, index, [item])
        self._next_id += 1
        return chunk
