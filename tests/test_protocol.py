"""The wire format: channels, message headers, and result bodies in both directions."""

from __future__ import annotations

import contextlib
import errno
import os
import pickle
import socket
import threading

import pytest

from fastparallel.backends.processes.launch import enlarge_pipe
from fastparallel.backends.processes.wire import channel as wire_channel
from fastparallel.backends.processes.wire.buffers import close_all, share
from fastparallel.backends.processes.wire.channel import (
    BuffersLost,
    Channel,
    Pickled,
    new_passers,
    send_with_buffers,
)
from fastparallel.backends.processes.wire.protocol import (
    ChunkHeader,
    DoneHeader,
    Kind,
    decode,
    decode_result,
    encode,
    encode_result,
)
from fastparallel.backends.processes.wire.remote_errors import ErrorKind, pack_exception
from fastparallel.core.chunking import Chunk
from fastparallel.serialize.pickling import dumps, loads

pytestmark = pytest.mark.unit


@pytest.fixture
def pipe():
    r, w = os.pipe()
    reader, writer = Channel(r), Channel(w)
    yield reader, writer
    reader.close()
    writer.close()


def test_frames_arrive_whole_and_in_order(pipe):
    reader, writer = pipe
    big = os.urandom(3 << 20)  # larger than any pipe buffer: needs a concurrent reader
    sender = threading.Thread(
        target=lambda: [writer.send(b"a"), writer.send(b"head", big), writer.send()]
    )
    sender.start()
    assert reader.recv() == (b"a", [])
    assert reader.recv() == (b"head" + big, [])
    assert reader.recv() == (b"", [])
    sender.join()


def test_end_of_file_is_eoferror(pipe):
    reader, writer = pipe
    writer.close()
    with pytest.raises(EOFError):
        reader.recv()


@pytest.mark.parametrize(
    "kind, header",
    [
        (Kind.CHUNK, ChunkHeader(7, 1_000_000_000_000, True, False, 16)),
        (Kind.DONE, DoneHeader(3, 0.25)),
        (Kind.SETUP, None),
        (Kind.STOP, None),
        (Kind.INIT_FAILED, None),
    ],
)
def test_headers_round_trip(kind, header):
    frame = bytearray(encode(kind, header) + b"body")
    got_kind, got_header, body = decode(frame)
    assert (got_kind, got_header, bytes(body)) == (kind, header, b"body")


def test_results_round_trip_with_errors():
    chunk = Chunk(0, 10, ["a", "b", "c"])
    packed = pack_exception(KeyError("b"), dumps)
    body = encode_result([1, None, 3], [(1, ErrorKind.FN, packed)])
    outcome = decode_result(body, chunk, stop_on_error=False)
    assert outcome is not None and outcome.values == [1, None, 3]
    [(offset, error)] = outcome.errors
    assert offset == 1 and isinstance(error, KeyError)
    assert "item 11 ('b')" in " ".join(error.__notes__)
    assert outcome.nbytes == len(body)


def test_a_result_that_cannot_be_pickled_becomes_its_items_error():
    body = encode_result([1, threading.Lock()], [])
    outcome = decode_result(body, Chunk(0, 0, [5, 6]), stop_on_error=False)
    assert outcome is not None and outcome.values[0] == 1
    [(offset, error)] = outcome.errors
    assert offset == 1 and "could not be pickled to send it back" in " ".join(error.__notes__)


def test_items_that_could_not_be_unpickled_split_the_chunk():
    packed = pack_exception(ValueError("bad"), dumps)
    body = encode_result([None], [(0, ErrorKind.ITEMS, packed)])
    assert decode_result(body, Chunk(0, 0, [1, 2]), True) is None  # split: run item by item
    single = decode_result(body, Chunk(0, 4, [1]), True)
    assert single is not None and isinstance(single.errors[0][1], ValueError)


def test_a_call_that_could_not_be_unpickled_fails_every_item():
    packed = pack_exception(ImportError("no module"), dumps)
    body = encode_result([None], [(0, ErrorKind.SETUP, packed)])
    outcome = decode_result(body, Chunk(0, 0, [1, 2, 3]), stop_on_error=False)
    assert outcome is not None and [o for o, _ in outcome.errors] == [0, 1, 2]


def test_a_body_that_cannot_be_unpickled_here():
    assert decode_result(b"not a pickle", Chunk(0, 0, [1, 2]), True) is None
    outcome = decode_result(b"not a pickle", Chunk(0, 3, [1]), True)
    assert outcome is not None and "could not be unpickled in this process" in " ".join(
        outcome.errors[0][1].__notes__
    )


# -- out-of-band buffers: descriptors passed with the frame --------------------------------------


@pytest.fixture
def passing_pipe():
    r, w = os.pipe()
    enlarge_pipe(w)  # room for a frame of 200 kB without a reader
    ours, theirs = new_passers()
    reader, writer = Channel(r, ours), Channel(w, theirs)
    yield reader, writer
    reader.close()
    writer.close()


def _memfds() -> list[str]:
    links = []
    for name in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            links.append(os.readlink(f"/proc/self/fd/{name}"))
    return [link for link in links if link.startswith("/memfd:fastparallel ")]


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="lists /proc/self/fd")
def test_frames_carry_buffers_as_descriptors_closed_on_both_sides(passing_pipe):
    reader, writer = passing_pipe
    small, large = bytearray(b"s" * 70_000), bytearray(b"L" * (2 << 20))  # copied out / mapped
    fds = share([pickle.PickleBuffer(small), pickle.PickleBuffer(large)])
    writer.send(b"head", fds=fds, sizes=[len(small), len(large)])
    close_all(fds)
    frame, buffers = reader.recv()
    assert frame == b"head" and [bytes(b) for b in buffers] == [bytes(small), bytes(large)]
    assert all(not b.readonly for b in buffers) and _memfds() == []
    buffers[1][0] = ord("x")  # private: the sender's memory and other receivers are unaffected
    assert large[0] == ord("L")


@pytest.mark.timeout(20)
def test_a_refused_message_goes_in_band(passing_pipe, monkeypatch):
    reader, writer = passing_pipe

    def refuse(*args):
        raise OSError(errno.ETOOMANYREFS, "Too many references")

    monkeypatch.setattr(wire_channel, "send_fds", refuse)
    value = bytearray(b"v" * 200_000)
    buffers: list[pickle.PickleBuffer] = []
    body = dumps(pickle.PickleBuffer(value), buffers=buffers)
    assert len(buffers) == 1 and len(body) < 100
    send_with_buffers(
        writer, b"H", Pickled(body, buffers, lambda: dumps(pickle.PickleBuffer(value)))
    )
    frame, received = reader.recv()
    assert received == [] and bytes(loads(memoryview(frame)[1:])) == bytes(value)


def test_buffers_have_the_size_sent_even_if_their_memory_is_larger(passing_pipe):
    reader, writer = passing_pipe  # POSIX shared memory may be rounded up to whole pages (macOS)
    data = bytearray(b"r" * 300_001)
    fds = share([pickle.PickleBuffer(data), pickle.PickleBuffer(data * 8)])
    for fd in fds:
        os.ftruncate(fd, os.fstat(fd).st_size + 5000)
    writer.send(b"x", fds=fds, sizes=[len(data), 8 * len(data)])
    close_all(fds)
    _, buffers = reader.recv()
    assert [b.nbytes for b in buffers] == [len(data), 8 * len(data)] and bytes(buffers[0]) == data


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="lists /proc/self/fd")
def test_dropped_descriptors_raise_buffers_lost_and_close_those_that_came(
    passing_pipe, monkeypatch
):
    reader, writer = passing_pipe
    send_fds = wire_channel.send_fds

    def drop_last(sock, buffers, fds):  # as the kernel does when the receiver has no room
        return send_fds(sock, buffers, fds[:-1])

    monkeypatch.setattr(wire_channel, "send_fds", drop_last)
    data = [bytearray(b"d" * 200_000) for _ in range(3)]
    fds = share([pickle.PickleBuffer(d) for d in data])
    writer.send(b"frame", fds=fds, sizes=[len(d) for d in data])
    close_all(fds)
    with pytest.raises(BuffersLost) as lost:
        reader.recv()
    assert lost.value.frame == b"frame" and "RLIMIT_NOFILE" in str(lost.value)
    assert _memfds() == []


class _BreaksAfterTheDescriptors:
    """A passer whose sizes come apart and whose connection then breaks."""

    def __init__(self, sock: socket.socket):
        self.sock = sock

    def recvmsg(self, *args):
        data, ancillary, flags, address = self.sock.recvmsg(*args)
        return data[:4], ancillary, flags, address

    def recv(self, n):
        raise ConnectionResetError("the worker went away")

    def close(self):
        self.sock.close()


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="lists /proc/self/fd")
def test_a_read_that_fails_after_the_descriptors_closes_them(passing_pipe):
    reader, writer = passing_pipe
    reader.passer = _BreaksAfterTheDescriptors(reader.passer)
    data = [bytearray(b"p" * 200_000) for _ in range(2)]
    fds = share([pickle.PickleBuffer(d) for d in data])
    writer.send(b"frame", fds=fds, sizes=[len(d) for d in data])
    close_all(fds)
    with pytest.raises(ConnectionResetError):
        reader.recv()
    assert _memfds() == []


def test_a_chunk_header_carries_the_descriptors_a_result_may_pass():
    header = ChunkHeader(3, 10, True, False, 2, False, False, 6)
    _, decoded, _ = decode(bytearray(encode(Kind.CHUNK, header)))
    assert decoded.max_fds == 6
    assert ChunkHeader(3, 10, True, False, 2).max_fds == 253  # by default, all it can pass
