"""The wire format: channels, message headers, and result bodies in both directions."""

from __future__ import annotations

import os
import threading

import pytest

from fastparallel.backends.base import Done, Split
from fastparallel.backends.protocol import (
    Channel,
    ChunkHeader,
    DoneHeader,
    Kind,
    decode,
    decode_result,
    encode,
    encode_result,
)
from fastparallel.chunking import Chunk
from fastparallel.pickling import dumps
from fastparallel.remote_errors import ErrorKind, pack_exception


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
    sender = threading.Thread(target=lambda: [writer.send(b"a"), writer.send(b"head", big), writer.send()])
    sender.start()
    assert reader.recv() == b"a"
    assert reader.recv() == b"head" + big
    assert reader.recv() == b""
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
    outcome = decode_result(body, chunk, 0.5, stop_on_error=False)
    assert isinstance(outcome, Done) and outcome.values == [1, None, 3] and outcome.seconds == 0.5
    [(offset, error)] = outcome.errors
    assert offset == 1 and isinstance(error, KeyError)
    assert "item 11 ('b')" in " ".join(error.__notes__)
    assert outcome.nbytes == len(body)


def test_a_result_that_cannot_be_pickled_becomes_its_items_error():
    body = encode_result([1, threading.Lock()], [])
    outcome = decode_result(body, Chunk(0, 0, [5, 6]), 0.0, stop_on_error=False)
    assert isinstance(outcome, Done) and outcome.values[0] == 1
    [(offset, error)] = outcome.errors
    assert offset == 1 and "could not be pickled to send it back" in " ".join(error.__notes__)


def test_items_that_could_not_be_unpickled_split_the_chunk():
    packed = pack_exception(ValueError("bad"), dumps)
    body = encode_result([None], [(0, ErrorKind.ITEMS, packed)])
    assert isinstance(decode_result(body, Chunk(0, 0, [1, 2]), 0.0, True), Split)
    single = decode_result(body, Chunk(0, 4, [1]), 0.0, True)
    assert isinstance(single, Done) and isinstance(single.errors[0][1], ValueError)


def test_a_call_that_could_not_be_unpickled_fails_every_item():
    packed = pack_exception(ImportError("no module"), dumps)
    body = encode_result([None], [(0, ErrorKind.SETUP, packed)])
    outcome = decode_result(body, Chunk(0, 0, [1, 2, 3]), 0.0, stop_on_error=False)
    assert isinstance(outcome, Done) and [o for o, _ in outcome.errors] == [0, 1, 2]


def test_a_body_that_cannot_be_unpickled_here():
    assert isinstance(decode_result(b"not a pickle", Chunk(0, 0, [1, 2]), 0.0, True), Split)
    outcome = decode_result(b"not a pickle", Chunk(0, 3, [1]), 0.0, True)
    assert isinstance(outcome, Done) and "could not be unpickled in this process" in " ".join(
        outcome.errors[0][1].__notes__)
