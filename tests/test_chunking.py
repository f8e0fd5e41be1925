"""The chunk sizer and the lazy chunk reader."""

from __future__ import annotations

import itertools

import pytest

from fastparallel.core.chunking import (
    MAX_CHUNK,
    TARGET_BYTES,
    TARGET_SECONDS,
    ChunkReader,
    ChunkSizer,
    Measured,
)

pytestmark = pytest.mark.unit


def test_a_fixed_chunksize_is_kept():
    sizer = ChunkSizer(7, 1000, 2)
    sizer.record(7, 100.0)
    assert sizer.next_size() == 7


def test_first_chunks_hold_one_item_then_aim_at_the_target_time():
    sizer = ChunkSizer(None, None, 2)
    assert sizer.next_size() == 1
    sizer.record(1, 0.001)  # 1 ms an item
    assert sizer.next_size() == round(TARGET_SECONDS / 0.001)
    sizer.record(100, 0.0)  # the average falls: bigger chunks
    assert sizer.next_size() > round(TARGET_SECONDS / 0.001)


def test_known_lengths_cap_chunks_so_every_worker_gets_several():
    sizer = ChunkSizer(None, 1000, 2)
    sizer.record(1, 1e-9)
    assert sizer.next_size() == 1000 // (4 * 2)
    assert ChunkSizer(None, None, 2).cap == MAX_CHUNK


def test_large_results_keep_chunks_near_the_byte_target():
    sizer = ChunkSizer(None, None, 2)
    sizer.record(1, 1e-6, nbytes=TARGET_BYTES // 4)  # fast items with 256 KiB results
    assert sizer.next_size() == 4


def test_the_reader_never_reads_ahead_of_what_is_asked():
    source = itertools.count()
    reader = ChunkReader(source, ChunkSizer(3, None, 1))
    first = reader.next_chunk()
    assert first is not None and first.items == [0, 1, 2] and first.start == 0
    assert next(source) == 3  # nothing more was consumed
    second = reader.next_chunk(size=2)
    assert second is not None and second.items == [4, 5] and second.start == 3 and second.id == 1


def test_the_reader_marks_the_end_and_makes_singles():
    reader = ChunkReader(iter(range(4)), ChunkSizer(3, None, 1))
    reader.next_chunk()
    last = reader.next_chunk()
    assert last is not None and last.items == [3] and reader.exhausted
    assert reader.next_chunk() is None
    single = reader.single(1, "x")
    assert single.start == 1 and single.items == ["x"] and single.id == 2


def test_sizer_starts_from_a_remembered_measurement_and_writes_its_own_back():
    memory = Measured()
    first = ChunkSizer(None, None, 1)
    first.resume(memory)
    assert first.next_size() == 1  # nothing remembered yet: measure
    first.record(128, TARGET_SECONDS / 8)  # an eighth of the target for 128 items
    assert first.next_size() == 1024
    first.remember()
    assert (memory.items, memory.seconds) == (128, TARGET_SECONDS / 8)
    second = ChunkSizer(None, None, 1)
    second.resume(memory)
    assert second.next_size() == 1024  # from the first chunk on
    second.record(8, TARGET_SECONDS)  # slower now: its own measurement wins
    assert second.next_size() == 8
    second.remember()
    assert (memory.items, memory.seconds) == (8, TARGET_SECONDS)
