"""Retries: which failed items run again, when, and what their final error says.

The dispatcher keeps one :class:`RetryQueue` per call with ``retries > 0``, for every
backend alike. An item whose attempt raised an instance of ``retry_on`` (a crash's
``WorkerDiedError`` and an ``ItemTimeoutError`` included) waits here, holding no
worker, until its next attempt is due; it then runs again as a one-item chunk. Before
attempt ``k + 1`` it waits ``retry_delay * 2 ** (k - 1)`` seconds, plus up to 10% of
random jitter, so that items that failed together do not all come back at once.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable

from fastparallel import logs
from fastparallel.backends.base import Chunk
from fastparallel.errors import add_note, attempts_note, describe_item, short_repr
from fastparallel.options import FOREVER, Options

__all__ = ["RetryQueue"]


JITTER = 0.1  # at most this fraction of a delay is added at random


class RetryQueue:
    """The failed items of one call that will run again, ordered by when."""

    def __init__(self, options: Options):
        self.retries = options.retries
        self.retry_on = options.retry_on
        self.delay = options.retry_delay
        self.retried = 0  # attempts made again so far
        self._earlier: dict[int, list[str]] = {}  # input index -> what its earlier attempts raised
        # A heap of (due time, chunk id, one-item chunk).
        self._waiting: list[tuple[float, int, Chunk]] = []

    def __len__(self) -> int:
        """Items waiting for their next attempt."""
        return len(self._waiting)

    def failed(
        self,
        index: int,
        item: object,
        error: BaseException,
        now: float,
        single: Callable[[], Chunk],
    ) -> BaseException | None:
        """An attempt of item ``index`` raised ``error``: None if it will run again
        (``single()`` makes its one-item chunk), else its final error, with a note on
        the earlier attempts if there were any."""
        earlier = self._earlier.get(index, [])
        attempts = len(earlier) + 1
        if attempts > self.retries or not isinstance(error, self.retry_on):
            if earlier:
                del self._earlier[index]
                add_note(error, attempts_note(attempts, earlier))
                logs.info(
                    "%s failed after %d attempts: %s",
                    describe_item(index, item),
                    attempts,
                    short_repr(error),
                )
            return error
        self._earlier[index] = [*earlier, short_repr(error)]
        import random  # here: most calls never retry

        # The doubling stops at FOREVER: 2 ** attempts grows past what a float holds.
        wait = min(FOREVER, self.delay * 2.0 ** min(attempts - 1, 64))
        wait *= 1 + JITTER * random.random()
        chunk = single()
        heapq.heappush(self._waiting, (now + wait, chunk.id, chunk))
        self.retried += 1
        logs.info(
            "%s raised %s; retry %d of %d in %.2fs",
            describe_item(index, item),
            short_repr(error),
            attempts,
            self.retries,
            wait,
        )
        return None

    def succeeded(self, index: int) -> None:
        """Item ``index`` has a result: forget its earlier attempts."""
        self._earlier.pop(index, None)

    def next_due(self) -> float | None:
        """When the next waiting item is due (``time.monotonic()``), if any waits."""
        return self._waiting[0][0] if self._waiting else None

    def due(self, now: float) -> list[Chunk]:
        """The one-item chunks whose next attempt is due at ``now``, earliest first."""
        chunks: list[Chunk] = []
        while self._waiting and self._waiting[0][0] <= now:
            chunks.append(heapq.heappop(self._waiting)[2])
        return chunks
