"""Large data between processes: pickle protocol 5 buffers out of band, through shared memory.

What travels how is proven, not just the values: a hook on the caller's channels records
each frame's size and how many buffers came with it, and large arrays must lie in a
mapping of fastparallel's shared memory (/proc/self/maps). Leak cases run in subprocess
scripts that list /dev/shm, their descriptors and their mappings.
"""

from __future__ import annotations

import gc
import pickle
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

if str(Path(__file__).resolve().parent) not in sys.path:  # workers import the helpers by name
    sys.path.insert(0, str(Path(__file__).resolve().parent))

import large_data_helpers as ld

import fastparallel
from fastparallel import parallel
from fastparallel.backends.processes.wire import channel, protocol
from fastparallel.backends.processes.worker import run_packed
from fastparallel.backends.runner import Call
from fastparallel.core.chunking import Chunk
from fastparallel.serialize.pickling import (
    MAX_OUT_OF_BAND,
    OUT_OF_BAND_BYTES,
    dumps,
    dumps_values,
    loads,
)

np = pytest.importorskip("numpy")

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc (Linux)"),
]
MIB = ld.MIB


class Frames:
    """What crossed the caller's channels: (kind, frame bytes, buffers) per frame."""

    def __init__(self) -> None:
        self.sent: list[tuple[protocol.Kind, int, int]] = []
        self.received: list[tuple[protocol.Kind, int, int]] = []

    def of(self, kind: protocol.Kind, sent: bool = True) -> list[tuple[int, int]]:
        return [
            (size, count) for k, size, count in (self.sent if sent else self.received) if k == kind
        ]


@pytest.fixture
def frames(monkeypatch: pytest.MonkeyPatch) -> Iterator[Frames]:
    record = Frames()
    send, recv = channel.Channel.send, channel.Channel.recv

    def recording_send(self: channel.Channel, *parts: Any, fds: Any = (), sizes: Any = ()) -> None:
        send(self, *parts, fds=fds, sizes=sizes)
        record.sent.append(
            (protocol.Kind(bytes(parts[0])[0]), sum(memoryview(p).nbytes for p in parts), len(fds))
        )

    def recording_recv(self: channel.Channel) -> tuple[bytearray, list[memoryview]]:
        frame, buffers = recv(self)
        record.received.append((protocol.Kind(frame[0]), len(frame), len(buffers)))
        return frame, buffers

    monkeypatch.setattr(channel.Channel, "send", recording_send)
    monkeypatch.setattr(channel.Channel, "recv", recording_recv)
    yield record


# -- pickling: which buffers leave the pickle ----------------------------------------------------


def test_dumps_leaves_large_contiguous_buffers_out_of_band() -> None:
    small, large = np.ones(OUT_OF_BAND_BYTES // 8 - 1), np.ones(OUT_OF_BAND_BYTES // 8)
    fortran, strided = np.asfortranarray(np.ones((512, 300))), np.ones((600, 600))[:, ::2]
    buffers: list[pickle.PickleBuffer] = []
    data = dumps([small, large, fortran, strided], buffers=buffers)
    assert [memoryview(b).nbytes for b in buffers] == [
        large.nbytes,
        fortran.nbytes,
    ]  # strided: in band
    got = loads(data, buffers=buffers)
    assert all(
        np.array_equal(a, b) for a, b in zip(got, [small, large, fortran, strided], strict=True)
    )
    assert got[2].flags.f_contiguous and len(data) < small.nbytes + strided.nbytes + 4096
    assert dumps(large) == pickle.dumps(large, protocol=5)  # without a list: everything in band


def test_dumps_keeps_buffers_beyond_one_message_in_band() -> None:
    arrays = [np.full(OUT_OF_BAND_BYTES // 8, i) for i in range(MAX_OUT_OF_BAND + 3)]
    buffers: list[pickle.PickleBuffer] = []
    got = loads(dumps(arrays, buffers=buffers), buffers=buffers)
    assert len(buffers) == MAX_OUT_OF_BAND and all(a[0] == i for i, a in enumerate(got))


def test_dumps_values_sends_top_level_bytes_out_of_band() -> None:
    values: list[Any] = [b"b" * (2 * MIB), bytearray(b"a" * MIB), b"small", 1]
    buffers: list[pickle.PickleBuffer] = []
    data = dumps_values(values, tuple, buffers=buffers)
    assert len(buffers) == 2 and len(data) < 1000
    got = loads(data, buffers=[memoryview(bytearray(b.raw())) for b in buffers])
    assert list(got) == values and [type(v) for v in got] == [bytes, bytearray, bytes, int]
    many = [b"x"] * 1000 + [b"y" * MIB]  # a long list is searched once its pickle is large
    buffers.clear()
    assert (
        loads(dumps_values(many, list, buffers=buffers), buffers=buffers) == many
        and len(buffers) == 1
    )


def test_run_packed_keeps_everything_in_band_for_executors() -> None:
    body, _ = run_packed(Call(ld.full, (), {"mib": 1}), [3], 0, True)
    assert len(body) > MIB  # Dask workers cannot receive descriptors: the array is in the pickle
    values, errors = loads(body)
    assert values[0][0] == 3 and not errors


# -- results, items and bound arguments -----------------------------------------------------------


def test_results_keep_values_dtypes_shapes_and_order(frames: Frames) -> None:
    structured = np.dtype([("a", "i4"), ("b", "f8"), ("c", "S3")])
    cases = [
        np.arange(MIB // 4, dtype="f8").reshape(256, -1),  # 2 MiB, mapped
        np.asfortranarray(np.arange(300_000, dtype="i8").reshape(600, 500)),  # Fortran order
        np.zeros(40_000, dtype=structured),  # structured, copied out (640 KB)
        np.arange(400_000, dtype="u1").reshape(800, 500)[:, ::2],  # not contiguous: in band
        np.arange(10, dtype="c16"),  # small: in band
        np.array(np.float32(2.5)),  # zero-dimensional
    ]
    cases[2]["a"] = np.arange(40_000)
    cases[2]["c"] = b"xyz"
    got = parallel(ld.echo, cases, n_workers=2, chunksize=1)
    for sent, back in zip(cases, got, strict=True):
        assert back.dtype == sent.dtype and back.shape == sent.shape and np.array_equal(back, sent)
        assert back.flags.writeable and back.flags.f_contiguous == sent.flags.f_contiguous
    assert ld.in_shared_memory(got[0]) and ld.in_shared_memory(got[1])
    # The strided array travels in band, and comes back contiguous: out of band.
    assert [count for _, count in frames.of(protocol.Kind.CHUNK)] == [1, 1, 1, 0, 0, 0]
    done = frames.of(protocol.Kind.DONE, sent=False)
    assert sorted(count for _, count in done) == [0, 0, 1, 1, 1, 1]
    assert all(size < 4096 for size, count in done if count)  # the frames carry no array data


def test_results_are_independent_writable_and_released(frames: Frames) -> None:
    got = parallel(ld.full, range(6), n_workers=2, mib=2)
    for i, array in enumerate(got):
        assert ld.in_shared_memory(array) and array.flags.writeable and array[0] == i
        assert not any(np.shares_memory(array, other) for other in got[i + 1 :])
    got[0][:] = -1
    assert all(array[0] == i and array[-1] == i for i, array in enumerate(got[1:], 1))
    mappings = len(ld.shared_mappings())
    del got[0]
    gc.collect()
    assert len(ld.shared_mappings()) == mappings - 1  # each array has its own mapping
    del got, array
    assert ld.leftovers() == {"mappings": 0, "fds": 0}
    assert sum(count for _, count in frames.of(protocol.Kind.DONE, sent=False)) == 6


def test_items_travel_out_of_band(frames: Frames) -> None:
    items = [np.full(MIB // 8 * 2, float(i)) for i in range(4)] + [
        np.full(20_000, 5.0)
    ]  # 2 MiB, 160 KB
    seen = parallel(ld.look, items, n_workers=2, chunksize=1)
    assert [s["sum"] for s in seen] == [float(i * MIB // 8 * 2) for i in range(4)] + [100_000.0]
    assert [s["shared"] for s in seen] == [True] * 4 + [False]  # the small one was copied out
    assert all(s["writeable"] for s in seen)
    chunks = frames.of(protocol.Kind.CHUNK)
    assert sorted(count for _, count in chunks) == [1] * 5 and all(
        size < 4096 for size, _ in chunks
    )


def test_a_bound_argument_is_shared_once_and_private_to_each_worker(
    frames: Frames, monkeypatch: pytest.MonkeyPatch
) -> None:
    shared: list[int] = []
    share = channel.share
    monkeypatch.setattr(
        channel, "share", lambda buffers: shared.append(len(buffers)) or share(buffers)
    )
    array = np.arange(2 * MIB, dtype="f8")  # 16 MiB
    seen = parallel(ld.look_at_bound, range(12), array, n_workers=2, chunksize=1)
    assert (array >= 0).all()  # the caller's array is untouched
    by_pid: dict[int, set[int]] = {}
    for item, s in enumerate(seen):
        by_pid.setdefault(s["pid"], set()).add(item)
        assert s["shared"] and s["writeable"]
    assert len(by_pid) == 2
    for item, s in enumerate(seen):  # a worker sees its own writes only
        assert item in s["negative"] and set(s["negative"]) <= by_pid[s["pid"]]
    setups = frames.of(protocol.Kind.SETUP)
    assert setups == [setups[0]] * 2 and setups[0][1] == 1 and setups[0][0] < 4096
    assert shared == [1]  # one copy into shared memory for the call, whatever the number of workers
    assert ld.leftovers()["fds"] == 0  # released when the call ended


def test_bytes_bytearray_and_pickle_buffers_round_trip(frames: Frames) -> None:
    sizes = [2 * MIB, 300_000, 100]
    got = parallel(ld.make_bytes, range(6), n_workers=2, chunksize=1, size=2 * MIB, mutable=True)
    assert all(type(b) is bytearray and len(b) == 2 * MIB and b[0] == i for i, b in enumerate(got))
    got[0].extend(b"more")  # an ordinary, resizable bytearray
    for size in sizes:
        got = parallel(ld.make_bytes, range(3), n_workers=2, chunksize=1, size=size, mutable=False)
        assert all(type(b) is bytes and b == bytes([i]) * size for i, b in enumerate(got))
    blobs = parallel(ld.make_blob, range(3), n_workers=2, chunksize=1)
    assert blobs == [ld.make_blob(i) for i in range(3)] and all(
        not memoryview(b.data).readonly for b in blobs
    )
    info = parallel(ld.blob_info, [ld.make_blob(7, mib=1.5)], n_workers=2)  # as an item too
    assert info == [{"size": int(1.5 * MIB), "first": 7, "writeable": True}]
    received = [count for _, count in frames.of(protocol.Kind.DONE, sent=False)]
    assert received.count(1) == 6 + 6 + 3  # bytearrays, large bytes (2 sizes) and blobs
    assert frames.of(protocol.Kind.CHUNK)[-1][1] == 1


# -- with the rest of fastparallel --------------------------------------------------------------


def test_generators_return_exceptions_and_a_crash_pinned_on_an_item() -> None:
    results = parallel(ld.full, range(8), n_workers=2, return_as="generator", mib=2)
    for i, array in enumerate(results):
        assert array[0] == i and ld.in_shared_memory(array)
        del array
    assert ld.leftovers() == {"mappings": 0, "fds": 0}
    got = parallel(ld.fail_on, range(6), n_workers=2, chunksize=3, return_exceptions=True, target=4)
    assert isinstance(got[4], ValueError) and all(got[i][0] == i for i in (0, 1, 2, 3, 5))
    with pytest.raises(fastparallel.WorkerDiedError) as info:
        parallel(ld.exit_on, range(8), n_workers=2, chunksize=4, target=6)
    assert "item 6" in str(info.value)
    got = parallel(ld.exit_on, range(8), n_workers=2, chunksize=4, target=6, return_exceptions=True)
    assert isinstance(got[6], fastparallel.WorkerDiedError) and all(
        got[i][-1] == i for i in range(8) if i != 6
    )
    del got, info
    assert ld.leftovers() == {"mappings": 0, "fds": 0}


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_multiprocessing_start_methods(method: str, frames: Frames) -> None:
    array = np.arange(MIB, dtype="f8")
    got = parallel(ld.look_at_bound, range(4), array, n_workers=2, method=method)
    assert all(s["shared"] and s["negative"] for s in got) and (array >= 0).all()
    got = parallel(ld.full, range(4), n_workers=2, method=method, mib=2)
    assert all(a[0] == i and ld.in_shared_memory(a) for i, a in enumerate(got))
    seen = parallel(ld.look, [np.ones(MIB // 4)] * 2, n_workers=2, method=method)
    assert [s["shared"] for s in seen] == [True, True]
    assert frames.of(protocol.Kind.SETUP)[0][1] == 1


def test_threads_and_serial_pass_objects_as_they_are() -> None:
    array = np.ones(MIB)
    for options in ({"threadpool": True}, {"n_workers": 0}):
        assert parallel(ld.echo, [array], **options)[0] is array
    assert ld.leftovers() == {"mappings": 0, "fds": 0}


def test_when_descriptors_cannot_travel_messages_go_in_band(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def refuse(*args: Any) -> None:
        raise OSError(109, "Too many references")  # ETOOMANYREFS

    monkeypatch.setattr(channel, "send_fds", refuse)
    array = np.arange(MIB // 2, dtype="f8")
    seen = parallel(ld.look_at_bound, range(2), array, n_workers=2)  # SETUP in band
    assert all(not s["shared"] and s["negative"] for s in seen)
    assert parallel(ld.look, [array] * 2, n_workers=2)[0]["sum"] == float(
        array.sum()
    )  # CHUNK in band
    assert ld.leftovers()["fds"] == 0


def test_outcomes_count_out_of_band_bytes_for_chunk_sizes() -> None:
    buffers: list[pickle.PickleBuffer] = []
    body = protocol.encode_result([np.ones(MIB)], [], buffers)
    views = [memoryview(bytearray(b.raw())) for b in buffers]
    outcome = protocol.decode_result(body, Chunk(0, 0, [1]), True, views)
    assert outcome is not None and outcome.nbytes >= 8 * MIB
