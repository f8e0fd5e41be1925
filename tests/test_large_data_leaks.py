"""Nothing of the shared memory that large data travels through is left behind.

After a normal call, a worker dying while it sends, fail-fast, a closed or abandoned
generator, and the caller killed by SIGKILL: no entry in /dev/shm, no descriptor or
mapping of that memory in the caller, the system's shared memory (``Shmem``) back where
it was, and no resource_tracker warning. Each case first proves that shared memory was
used at all.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sys
from pathlib import Path

import pytest

if str(Path(__file__).resolve().parent) not in sys.path:  # workers import the helpers by name
    sys.path.insert(0, str(Path(__file__).resolve().parent))

import faults_helpers as h
import large_data_helpers as ld

import fastparallel
from fastparallel import parallel

np = pytest.importorskip("numpy")

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc (Linux)"),
]
MIB = ld.MIB
SLACK_KIB = 16 * 1024  # Shmem moves a little with whatever else runs on the machine


def shmem_settles(baseline: int, what: str) -> int:
    """Wait (bounded) until the system's Shmem is back near ``baseline``; the last reading."""
    readings: list[int] = []

    def settled() -> bool:
        readings.append(ld.shmem_kib())
        return readings[-1] <= baseline + SLACK_KIB

    # Up to 30 s: the kernel frees a dead worker's in-flight memfds a little later, and on a
    # machine at load 6-9 that took over 10 s. The wait ends once Shmem is back.
    h.wait_for(settled, 30, f"{what}: Shmem back to {baseline} KiB (last {readings[-1:]} KiB)")
    return readings[-1]


NORMAL_SCRIPT = """
import gc
import numpy as np
import large_data_helpers as ld

def calls(arg):
    seen = parallel(ld.look_at_bound, range(4), arg, n_workers=2)
    results = parallel(ld.full, range(4), n_workers=2, mib=2)
    items = parallel(ld.look, [arg, arg[: arg.size // 8]], n_workers=2)
    used = all(s["shared"] for s in seen) and all(ld.in_shared_memory(r) for r in results) and items[0]["shared"]
    return used

if __name__ == "__main__":
    start = {"fds": ld.fd_count(), "shm": ld.dev_shm()}
    arg = np.ones(2 * ld.MIB)
    used = calls(arg)
    warm = ld.fd_count()
    for _ in range(25):
        used = calls(arg) and used
    after = {"fds": ld.fd_count(), "leftovers": ld.leftovers(), "shm": ld.dev_shm()}
    fastparallel.shutdown()
    dump("out.json", {"start": start, "warm": warm, "after": after, "used": used, "end_fds": ld.fd_count()})
"""


@pytest.mark.timeout(120)
def test_normal_calls_leave_nothing(tmp_path: Path) -> None:
    baseline = ld.shmem_kib()
    proc = h.run_script(tmp_path, NORMAL_SCRIPT, timeout=100)
    assert proc.returncode == 0, proc.stderr
    out = json.loads((tmp_path / "out.json").read_text())
    assert out["used"], out
    assert out["after"]["fds"] == out["warm"] and out["end_fds"] == out["start"]["fds"], out
    assert out["after"]["leftovers"] == {"mappings": 0, "fds": 0}, out
    assert out["after"]["shm"] == out["start"]["shm"] == ld.dev_shm(), out
    assert "resource_tracker" not in proc.stderr and "leaked" not in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    shmem_settles(baseline, "after the script")


@pytest.mark.timeout(60)
@pytest.mark.parametrize("how", ["fds", "frame"])
def test_a_worker_dying_while_it_sends_leaves_nothing(how: str) -> None:
    fastparallel.shutdown()
    baseline = ld.shmem_kib()
    with pytest.raises(fastparallel.WorkerDiedError, match="item 0"):
        parallel(ld.die_after_passing, [0], n_workers=1, how=how, mib=64)
    assert ld.leftovers() == {"mappings": 0, "fds": 0}
    shmem_settles(baseline, "the 64 MiB result in flight")
    assert parallel(ld.full, range(2), n_workers=1, mib=2)[1][0] == 1  # a new worker serves


@pytest.mark.timeout(60)
def test_fail_fast_drops_results_in_flight() -> None:
    baseline = ld.shmem_kib()
    with pytest.raises(ValueError, match="item 9 fails"):
        parallel(ld.fail_on, range(40), n_workers=2, chunksize=2, target=9, mib=8)
    assert ld.leftovers() == {"mappings": 0, "fds": 0}
    shmem_settles(baseline, "after fail-fast")


@pytest.mark.timeout(60)
@pytest.mark.parametrize("ending", ["close", "abandon"])
def test_a_generator_closed_or_abandoned_leaves_nothing(ending: str) -> None:
    baseline = ld.shmem_kib()
    items = [np.full(MIB, float(i)) for i in range(16)]  # 8 MiB each: items travel too
    results = parallel(ld.echo, items, n_workers=2, chunksize=1, return_as="generator")
    first = next(results)
    assert first[0] == 0 and ld.in_shared_memory(first)
    del first
    if ending == "close":
        results.close()
    del results
    assert ld.leftovers() == {"mappings": 0, "fds": 0}
    shmem_settles(baseline, f"after the generator was {ending}d")


KILLED_SCRIPT = """
import numpy as np
import large_data_helpers as ld

if __name__ == "__main__":
    arg = np.ones(4 * ld.MIB)  # 32 MiB: bound to the call, in shared memory
    items = [np.full(2 * ld.MIB, float(i)) for i in range(8)]  # 16 MiB each
    dump("pid.json", os.getpid())
    parallel(ld.mark_then_block, items, n_workers=2, chunksize=1, marks=sys.argv[2], arg=arg)
"""


@pytest.mark.timeout(90)
def test_a_caller_killed_by_sigkill_leaves_nothing(tmp_path: Path) -> None:
    marks = tmp_path / "marks"
    marks.mkdir()
    shm_before, baseline = ld.dev_shm(), ld.shmem_kib()
    proc = h.start_script(tmp_path, KILLED_SCRIPT, args=[str(marks)])
    try:
        h.wait_for(lambda: len(ld.read_marks(str(marks))) >= 2, 30, "both workers to start an item")
        assert all(
            m["shared"] for m in ld.read_marks(str(marks))
        )  # items and argument in shared memory
        # The argument (32 MiB) and the two running items (16 MiB each) are in shared
        # memory: 64 MiB, less what the machine's Shmem moved meanwhile (up to SLACK_KIB
        # each way: the previous test's memory may still have been freeing at the baseline).
        assert ld.shmem_kib() > baseline + 64 * 1024 - 2 * SLACK_KIB
        family = [pid for pid, _ in h.descendants(proc.pid)]
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        h.wait_gone(family, 15, "the killed caller's template and workers")
    finally:
        h.kill_session(proc.pid)
        proc.wait()
    assert ld.dev_shm() == shm_before
    shmem_settles(baseline, "after the caller was killed")


NAMED_SCRIPT = """
import importlib
import numpy as np
import large_data_helpers as ld
from fastparallel.backends.processes.wire import buffers

posixshmem = importlib.import_module("_posixshmem")
opened = []
shm_open = posixshmem.shm_open
def counting_open(name, *args):
    opened.append(name)
    return shm_open(name, *args)
posixshmem.shm_open = counting_open
buffers._MEMFD = False  # as where there is no memfd_create: named POSIX shared memory, unlinked at once

if __name__ == "__main__":
    arg = np.ones(ld.MIB)
    seen = parallel(ld.look_at_bound, range(4), arg, n_workers=2, method="fork")
    results = parallel(ld.full, range(4), n_workers=2, method="fork", mib=2)
    items = parallel(ld.look, [arg] * 2, n_workers=2, method="fork")
    ok = all(s["negative"] for s in seen) and all(r[0] == i for i, r in enumerate(results))
    dump("out.json", {"opened": len(opened), "ok": ok, "shm": ld.dev_shm(),
                      "results_in": [ld.mapping_of(r) for r in results]})
"""


@pytest.mark.timeout(60)
def test_named_shared_memory_is_unlinked_at_once(tmp_path: Path) -> None:
    shm_before = ld.dev_shm()
    proc = h.run_script(tmp_path, NAMED_SCRIPT, timeout=50)
    assert proc.returncode == 0, proc.stderr
    out = json.loads((tmp_path / "out.json").read_text())
    assert out["ok"] and out["opened"] >= 3, out  # the call and the items (in the caller)...
    assert all(
        re.fullmatch(r"/dev/shm/fp[0-9a-f]{16} \(deleted\)", m) for m in out["results_in"]
    ), out  # results
    assert out["shm"] == shm_before == ld.dev_shm(), out
    assert "resource_tracker" not in proc.stderr and "Traceback" not in proc.stderr, proc.stderr


MEMORY_SCRIPT = """
import resource
import numpy as np
import large_data_helpers as ld

def status(field):
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1])  # KiB

if __name__ == "__main__":
    parallel(ld.full, range(4), n_workers=2, mib=0.01)  # the pool is warm
    before = status("VmRSS")
    results = parallel(ld.full, range(64), n_workers=2, mib=4)
    assert all(r[0] == i and r[-1] == i and r.sum() == i * r.size for i, r in enumerate(results))
    dump("out.json", {"before": before, "peak": status("VmHWM"), "now": status("VmRSS"),
                      "shared": sum(ld.in_shared_memory(r) for r in results)})
"""


@pytest.mark.timeout(90)
def test_peak_memory_stays_close_to_the_results_kept(tmp_path: Path) -> None:
    proc = h.run_script(tmp_path, MEMORY_SCRIPT, timeout=80)
    assert proc.returncode == 0, proc.stderr
    out = json.loads((tmp_path / "out.json").read_text())
    kept = 64 * 4 * 1024  # KiB
    assert out["shared"] == 64, out  # every result was mapped, not copied
    assert out["peak"] - out["before"] <= 1.5 * kept + 64 * 1024, out
