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

    def next_size(self) -> int:
        if self.fixed is not None:
            return self.fixed
        measured = self._measured if self._measured.items or self._memory is None else self._memory
        if not measured.items:
            return 1
        per_item = measured.seconds / measured.items
        size = self.cap if per_item <= 0 else int(TARGET_SECONDS / per_item)
        if measured.nbytes:
            size = min(size, int(TARGET_BYTES * measured.items / measured.nbytes))
        return max(1, min(self.cap, size))


class ChunkReader:
    """Reads chunks from an iterator on demand; never reads further than asked."""

    def __init__(
        self, items: Iterator[Any], sizer: ChunkSizer, *, start: int = 0, first_id: int = 0
    ):
        """``start``: the input index of the first item of ``items`` (the items before it
        were read elsewhere, by ``threadpool="auto"``'s probe); ``first_id``: the first chunk id."""
        self._items = items
        self._sizer = sizer
        self._next_id = first_id
        self.read = start  # items read so far
        self.exhausted = False

    def next_chunk(self, size: int | None = None) -> Chunk | None:
        """The next chunk, or None when the input is exhausted.

        Exceptions raised by the input iterator propagate unchanged.
        """
        if self.exhausted:
            return None
        n = self._sizer.next_size() if size is None else size
        batch = list(itertools.islice(self._items, n))
        if len(batch) < n:
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
