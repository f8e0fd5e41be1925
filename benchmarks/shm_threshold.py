"""Where shared memory starts to beat the pipe: the out-of-band threshold (``python -m benchmarks.shm_threshold``).

A forked child holds a float64 NumPy array of each size and sends it to this process on
request, the way a worker sends a result: pickled in band through the pipe, or out of band
through shared memory (one memfd per buffer, its descriptor passed with the frame, mapped
here). This process unpickles it and reads every byte (``arr.sum()``), so that the page
faults of a fresh mapping are counted. The two ways alternate; the table shows medians.
A second table compares what the receiver alone pays for one buffer in shared memory:
mapping it (copy-on-write) or copying it out with ``preadv``, then reading it.
"""

from __future__ import annotations

import argparse
import os
import pickle
import socket
import statistics
import time

import numpy as np

from fastparallel.backends.processes.launch import enlarge_pipe
from fastparallel.backends.processes.wire import buffers
from fastparallel.backends.processes.wire.buffers import close_all, share
from fastparallel.backends.processes.wire.channel import Channel
from fastparallel.serialize import pickling

SIZES = [
    4 << 10,
    16 << 10,
    32 << 10,
    64 << 10,
    128 << 10,
    256 << 10,
    1 << 20,
    4 << 20,
    16 << 20,
    64 << 20,
]


def _child(requests: Channel, replies: Channel) -> None:
    arrays = {size: np.full(size // 8, 1.0) for size in SIZES}
    while True:
        frame, _ = requests.recv()
        if not frame:
            os._exit(0)
        size, shared = int(frame[:-1]), frame[-1:] == b"s"
        if shared:
            buffers: list[pickle.PickleBuffer] = []
            body = pickling.dumps(arrays[size], buffers=buffers)
            fds = share(buffers)
            replies.send(body, fds=fds, sizes=[memoryview(b).nbytes for b in buffers])
            close_all(fds)
        else:
            replies.send(pickling.dumps(arrays[size]))


def _round_trip(requests: Channel, replies: Channel, size: int, shared: bool) -> float:
    start = time.perf_counter()
    requests.send(b"%d%s" % (size, b"s" if shared else b"p"))
    body, buffers = replies.recv()
    array = pickling.loads(body, buffers=buffers)
    assert array.sum() == size // 8
    return time.perf_counter() - start


def _memcpy_seconds(size: int) -> float:
    source, target = np.ones(size // 8), np.empty(size // 8)
    target[:] = source  # touch the pages once
    start = time.perf_counter()
    target[:] = source
    return time.perf_counter() - start


def _receive_seconds(fd: int, size: int, mapped: bool) -> float:
    """What the receiver pays for one buffer: map it, or copy it out (then read it all)."""
    start = time.perf_counter()
    if mapped:
        buffers.prepare_mapping()
        view = buffers._map(fd, size)
    else:
        view = memoryview(bytearray(size))
        os.preadv(fd, [view], 0)
    assert np.frombuffer(view).sum() == size // 8
    del view
    return time.perf_counter() - start


def receiver_table(reps: int) -> None:
    """Mapping against copying, in the receiver alone, for sizes around the threshold."""
    print(f"\n{'size':>8} {'copy us':>10} {'map us':>10} {'map/copy':>9}")
    for size in (16 << 10, 64 << 10, 256 << 10, 1 << 20, 4 << 20, 16 << 20):
        [fd] = share([pickle.PickleBuffer(np.full(size // 8, 1.0))])
        times: dict[bool, list[float]] = {False: [], True: []}
        for _ in range(reps):
            for mapped in (False, True):
                times[mapped].append(_receive_seconds(fd, size, mapped))
        os.close(fd)
        copy, mapped_ = (statistics.median(times[m]) * 1e6 for m in (False, True))
        label = f"{size >> 10} KiB" if size < 1 << 20 else f"{size >> 20} MiB"
        print(f"{label:>8} {copy:10.1f} {mapped_:10.1f} {mapped_ / copy:9.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--reps", type=int, default=30)
    args = parser.parse_args()
    pickling.OUT_OF_BAND_BYTES = 0  # every size out of band when asked (the child inherits it)
    ours, theirs = socket.socketpair()
    to_child_r, to_child_w = os.pipe()
    from_child_r, from_child_w = os.pipe()
    enlarge_pipe(to_child_w)  # as the process pool does
    enlarge_pipe(from_child_w)
    pid = os.fork()
    if pid == 0:
        _child(Channel(to_child_r, theirs), Channel(from_child_w, theirs))
    requests, replies = Channel(to_child_w, ours), Channel(from_child_r, ours)
    print(f"{'size':>8} {'pipe us':>10} {'shm us':>10} {'shm/pipe':>9} {'memcpy us':>10}")
    for size in SIZES:
        times: dict[bool, list[float]] = {False: [], True: []}
        for _ in range(args.reps):
            for shared in (False, True):
                times[shared].append(_round_trip(requests, replies, size, shared))
        pipe, shm = (statistics.median(times[s]) * 1e6 for s in (False, True))
        copy = statistics.median(_memcpy_seconds(size) for _ in range(5)) * 1e6
        label = f"{size >> 10} KiB" if size < 1 << 20 else f"{size >> 20} MiB"
        print(f"{label:>8} {pipe:10.1f} {shm:10.1f} {shm / pipe:9.2f} {copy:10.1f}")
    requests.send(b"")
    os.waitpid(pid, 0)
    receiver_table(args.reps * 10)


if __name__ == "__main__":
    main()
