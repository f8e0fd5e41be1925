"""The current-item slot: reading it consistently, which item runs, when one is overdue."""

from __future__ import annotations

import os

import pytest

from fastparallel.backends.base import Chunk
from fastparallel.backends.slots import (
    NO_ITEM,
    SLOT_BYTES,
    STARTING,
    RunningItem,
    is_overdue,
    new_slot_memory,
    next_deadline,
    read_slot,
    running_item,
)

pytestmark = pytest.mark.unit


class Racing(list):
    """A slot whose index changes between the reads of one attempt, as when the worker
    starts a new item meanwhile."""

    def __init__(self, indices: list[int], started_ns: int):
        super().__init__([indices[0], started_ns])
        self._indices = iter(indices)

    def __getitem__(self, position):  # type: ignore[override]
        if position == 0:
            return next(self._indices)
        return super().__getitem__(position)


def test_a_consistent_pair_is_read():
    assert read_slot([4, 1_500_000_000], now=9.0) == (4, 1.5)


def test_an_index_that_keeps_changing_is_taken_as_starting_now():
    slot = Racing([1, 2, 3, 4, 5, 6, 7], 1_000_000_000)
    index, started = read_slot(slot, now=9.0)
    assert started == 9.0  # late rather than early: never failed before its time
    assert index == 7


def test_the_running_item_is_found_in_its_chunk_only():
    chunk = Chunk(0, 10, ["a", "b", "c"])
    assert running_item([12, 2_000_000_000], chunk, 5.0) == RunningItem(chunk, 2, 2.0)
    assert running_item([13, 0], chunk, 5.0) is None  # another chunk's item
    assert running_item([NO_ITEM, 0], chunk, 5.0) is None  # between items
    assert running_item([12, 0], None, 5.0) is None  # no chunk


def test_the_next_deadline_is_the_earliest_start_plus_the_limit():
    items = [RunningItem(None, 0, 3.0), None, RunningItem(None, 0, 1.0)]
    assert next_deadline(items, limit=2.0, now=4.0) == 3.0
    assert next_deadline([], limit=2.0, now=4.0) == 6.0  # an item may start right now
    assert next_deadline(items, limit=None, now=4.0) is None


def test_overdue_at_the_limit_and_not_before():
    item = RunningItem(None, 0, 1.0)
    assert not is_overdue(item, 2.0, now=2.9)
    assert is_overdue(item, 2.0, now=3.0)
    assert not is_overdue(item, None, now=100.0)
    assert not is_overdue(None, 2.0, now=100.0)


def test_a_new_slot_is_shared_memory_that_says_starting():
    fd, memory = new_slot_memory()
    try:
        assert os.fstat(fd).st_size == SLOT_BYTES
        view = memoryview(memory).cast("q")
        assert view[0] == STARTING
        view.release()
    finally:
        memory.close()
        os.close(fd)
