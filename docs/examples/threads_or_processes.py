"""Reproduce the measurements quoted on the "Threads or processes?" page.

Run from the repository root:

    PYTHONPATH=src python docs/examples/threads_or_processes.py        # all sections
    PYTHONPATH=src python docs/examples/threads_or_processes.py 4 5    # only some

Every number is the best of a few repeats (the minimum wall-clock time), so
that a noisy neighbour on a shared machine does not inflate it. Absolute
numbers depend on your machine; the ratios are what matter.
"""

from __future__ import annotations

import hashlib
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
import zlib

from fastparallel import num_cpus, parallel, shutdown


def _cpu_idle_fraction(seconds=0.5):
    """Share of the machine's CPU time that was idle during the next ``seconds``."""

    def sample():
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
        return fields[3] + fields[4], sum(fields)  # idle + iowait, total

    idle0, total0 = sample()
    time.sleep(seconds)
    idle1, total1 = sample()
    return (idle1 - idle0) / max(1, total1 - total0)


def wait_until_quiet(threshold=0.9, max_wait=300.0):
    """On a shared machine, wait until other programs leave the CPUs (mostly) idle."""
    if not os.path.exists("/proc/stat"):
        return
    deadline = time.monotonic() + max_wait
    while time.monotonic() < deadline:
        if _cpu_idle_fraction() >= threshold:
            return
    print("  (warning: the machine stayed busy; numbers may be pessimistic)")


def best_of(fn, repeat=3):
    times = []
    for _ in range(repeat):
        wait_until_quiet()
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def row(label, seconds, base=None):
    speedup = f"{base / seconds:5.2f}x" if base else ""
    shown = f"{seconds:8.3f} s " if seconds >= 0.1 else f"{seconds * 1000:8.2f} ms"
    print(f"  {label:<44} {shown}  {speedup}")


# --- workloads --------------------------------------------------------------


def busy(n):
    """Pure-Python arithmetic: holds the GIL the whole time."""
    s = 0
    for i in range(n):
        s += i * i
    return s


def wait(seconds):
    """Stands in for a network or disk request: the thread just waits."""
    time.sleep(seconds)
    return seconds


def digest(data):
    """hashlib releases the GIL while hashing buffers larger than 2 KiB."""
    return hashlib.sha3_256(data).hexdigest()


def make_and_digest(seed, size=16 * 2**20):
    """Same hashing work, but the 16 MB buffer is created inside the worker."""
    return hashlib.sha3_256(bytes([seed % 256]) * size).hexdigest()


def read_and_inflate(path):
    """Like decoding an image file: read compressed bytes, return a large buffer.

    zlib releases the GIL while it decompresses.
    """
    with open(path, "rb") as f:
        return zlib.decompress(f.read())


def make_compressed_files(directory, n=32, size=8 * 2**20):
    rng = random.Random(0)
    words = [
        bytes(rng.choices(b"abcdefghijklmnopqrstuvwxyz", k=rng.randint(2, 9))) for _ in range(5000)
    ]
    paths = []
    for i in range(n):
        data = b" ".join(rng.choices(words, k=size // 6))[:size]
        path = os.path.join(directory, f"blob{i:02d}.z")
        with open(path, "wb") as f:
            f.write(zlib.compress(data, 6))
        paths.append(path)
    return paths


def tiny(x):
    return x + 1


def lookup(i, table=None):
    return table[i % len(table)]


def job_with_serial_part(n_items, per_item, serial, **kw):
    """Amdahl: a serial step (e.g. loading, merging) plus a parallel map."""
    busy(serial)
    return parallel(busy, [per_item] * n_items, **kw)


def section_1():
    print("\n1. CPU-bound pure Python: 16 items of busy(3_000_000)")
    items = [3_000_000] * 16
    base = best_of(lambda: [busy(n) for n in items], 2)
    row("serial (list comprehension)", base)
    row(
        "threads, n_workers=2",
        best_of(lambda: parallel(busy, items, threadpool=True, n_workers=2), 2),
        base,
    )
    row("processes, n_workers=2 (default)", best_of(lambda: parallel(busy, items), 2), base)


def section_2():
    print("\n2. I/O-bound: 32 items of time.sleep(0.1)")
    items = [0.1] * 32
    base = best_of(lambda: [wait(s) for s in items], 1)
    row("serial", base)
    row(
        "threads, n_workers=2",
        best_of(lambda: parallel(wait, items, threadpool=True, n_workers=2)),
        base,
    )
    row(
        "threads, n_workers=16",
        best_of(lambda: parallel(wait, items, threadpool=True, n_workers=16)),
        base,
    )
    row("processes, n_workers=2 (default)", best_of(lambda: parallel(wait, items)), base)


def section_3():
    print("\n3. C code that releases the GIL: sha3_256 of 16 x 16 MB buffers")
    blobs = [bytes([i]) * (16 * 2**20) for i in range(16)]
    base = best_of(lambda: [digest(b) for b in blobs])
    row("serial", base)
    row(
        "threads, n_workers=2",
        best_of(lambda: parallel(digest, blobs, threadpool=True, n_workers=2)),
        base,
    )
    row("processes, buffers pickled to workers", best_of(lambda: parallel(digest, blobs)), base)
    seeds = list(range(16))
    row(
        "processes, buffers built in the worker",
        best_of(lambda: parallel(make_and_digest, seeds)),
        base,
    )


def section_4():
    print("\n4. Reading and decompressing 32 files (8 MB each once inflated)")
    with tempfile.TemporaryDirectory() as tmp:
        paths = make_compressed_files(tmp)
        base = best_of(lambda: [read_and_inflate(p) for p in paths])
        row("serial", base)
        row(
            "threads, n_workers=2",
            best_of(lambda: parallel(read_and_inflate, paths, threadpool=True, n_workers=2)),
            base,
        )
        row(
            "processes, 8 MB results pickled back",
            best_of(lambda: parallel(read_and_inflate, paths)),
            base,
        )


def section_5():
    print("\n5. Start-up and per-call overhead: parallel(tiny, range(10))")
    first_call = (
        "import time; from fastparallel import parallel; t0 = time.perf_counter(); "
        "parallel(abs, range(10)); print(time.perf_counter() - t0)"
    )

    def in_new_interpreter():
        out = subprocess.run(
            [sys.executable, "-c", first_call], capture_output=True, text=True, check=True
        )
        return float(out.stdout.split()[-1])

    times = []
    for _ in range(3):
        wait_until_quiet()
        times.append(in_new_interpreter())
    row("processes, first call in a new interpreter", min(times))

    def after_shutdown():
        shutdown()
        t0 = time.perf_counter()
        parallel(tiny, range(10))
        return time.perf_counter() - t0

    times = []
    for _ in range(3):
        wait_until_quiet()
        times.append(after_shutdown())
    row("processes, first call after shutdown()", min(times))
    row("processes, later calls (warm pool)", best_of(lambda: parallel(tiny, range(10)), 5))
    row(
        "processes, method='fork' (new pool per call)",
        best_of(lambda: parallel(tiny, range(10), method="fork"), 5),
    )
    row("threads", best_of(lambda: parallel(tiny, range(10), threadpool=True), 5))
    row("serial", best_of(lambda: [tiny(x) for x in range(10)], 5))


def section_6():
    print("\n6. Many tiny items: tiny() over 200_000 ints")
    items = range(200_000)
    base = best_of(lambda: [tiny(x) for x in items])
    row("serial", base)
    row("threads", best_of(lambda: parallel(tiny, items, threadpool=True)), base)
    row("processes (automatic chunksize)", best_of(lambda: parallel(tiny, items)), base)


def section_7():
    print("\n7. parallel() in a loop: 50 batches of 128 items of busy(4_000)")
    batches = [[4_000] * 128 for _ in range(50)]

    def pool_per_call():
        for b in batches:
            shutdown()
            parallel(busy, b)

    base = best_of(lambda: [[busy(x) for x in b] for b in batches])
    row("serial", base)
    row("threads", best_of(lambda: [parallel(busy, b, threadpool=True) for b in batches]), base)
    row(
        "processes, warm pool (default)",
        best_of(lambda: [parallel(busy, b) for b in batches]),
        base,
    )
    row(
        "processes, method='fork' (pool per call)",
        best_of(lambda: [parallel(busy, b, method="fork") for b in batches], 2),
        base,
    )
    row("processes, new forkserver pool per call", best_of(pool_per_call, 1), base)


def section_8():
    print("\n8. Pickling: a 20 MB table, 64 lookups")
    table = list(range(2_500_000))  # about 20 MB pickled
    row(
        "table as a keyword argument (sent once per worker)",
        best_of(lambda: parallel(lookup, range(64), table=table)),
    )
    row(
        "table inside every item (pickled 64 times)",
        best_of(lambda: parallel(lambda t: lookup(t[0], t[1]), [(i, table) for i in range(64)]), 1),
    )
    row(
        "threads (nothing is pickled)",
        best_of(lambda: parallel(lookup, range(64), table=table, threadpool=True)),
    )


def section_9():
    print("\n9. Amdahl's law: serial busy(12_000_000) + 8 parallel items of busy(3_000_000)")
    base = best_of(lambda: job_with_serial_part(8, 3_000_000, 12_000_000, n_workers=0), 2)
    row("everything serial (n_workers=0)", base)
    row(
        "map part on 2 processes",
        best_of(lambda: job_with_serial_part(8, 3_000_000, 12_000_000), 2),
        base,
    )
    print(
        "  (p = 2/3 of the serial time is parallel: Amdahl predicts 1 / (1/3 + 1/3) = 1.5x on 2 cores)"
    )


SECTIONS = {n: globals()[f"section_{n}"] for n in range(1, 10)}


def main(argv=None):
    """Run all sections, or only those named on the command line (e.g. ``4 5``)."""
    wanted = [int(a) for a in (sys.argv[1:] if argv is None else argv)] or sorted(SECTIONS)
    print(
        f"machine: {platform.processor() or platform.machine()}, "
        f"os.cpu_count()={os.cpu_count()}, num_cpus()={num_cpus()}, "
        f"Python {platform.python_version()}"
    )
    # warm the process pool once so that later rows measure the work, not start-up
    parallel(tiny, range(4))
    for n in wanted:
        SECTIONS[n]()


if __name__ == "__main__":
    main()
