"""max_memory: items run only as many at once as their measured memory fits; the OOM killer."""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import memory_helpers as mh
import pytest

from fastparallel import WorkerDiedError, cpus, parallel
from fastparallel.backends.processes import memory
from fastparallel.backends.processes.memory import MemoryGovernor, memory_budget
from fastparallel.options import Options

MB = 10**6
_REAL_SOURCES = memory.SOURCES
GB = 10**9


@pytest.fixture
def fake_machine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A fake /sys/fs/cgroup, /proc/self/cgroup, /proc/meminfo and /proc/vmstat where
    the memory governor reads them; returns a function that writes the cgroup files."""
    root = tmp_path / "cgroup"
    root.mkdir()
    (tmp_path / "proc-cgroup").write_text("0::/job\n")
    (tmp_path / "meminfo").write_text(f"MemAvailable: {20 * GB // 1024} kB\n")
    (tmp_path / "vmstat").write_text("oom_kill 0\n")
    sources = tuple(str(tmp_path / n) for n in ("cgroup", "proc-cgroup", "meminfo", "vmstat"))
    monkeypatch.setattr(memory, "SOURCES", sources)

    def cgroup(limit: int, usage: int) -> None:
        memory._cgroups_read.clear()  # a process's cgroups never move: they are read once
        (root / "cgroup.controllers").write_text("cpu memory\n")
        (root / "job").mkdir(exist_ok=True)
        (root / "job" / "memory.max").write_text(f"{limit}\n")
        (root / "job" / "memory.current").write_text(f"{usage}\n")

    return cgroup


# -- the governor, from injected measurements ------------------------------------------


@pytest.mark.unit
def test_measured_items_run_as_many_at_once_as_fit(fake_machine, caplog):
    caplog.set_level(logging.INFO, logger="fastparallel")
    governor = MemoryGovernor(budget=10 * GB, n_workers=4)
    assert governor.allowed == 4 and not governor.queues  # nothing measured yet
    governor.chunk_done(start_rss=100 * MB, peak_rss=3_200 * MB)
    assert governor.need == 3_100 * MB
    assert governor.allowed == 3  # 4 * 0.1 GB idle + 3 * 3.1 GB <= 10 GB
    assert not governor.queues
    assert "memory: 3.1 GB per item, running 3 at a time" in caplog.messages
    governor.running([(100 * MB, 5_100 * MB)])  # a running item has grown more
    assert governor.allowed == 1  # down to one
    assert governor.need == 5 * GB


@pytest.mark.unit
def test_small_items_run_on_every_worker_and_queue(fake_machine, caplog):
    caplog.set_level(logging.INFO, logger="fastparallel")
    governor = MemoryGovernor(budget=GB, n_workers=4)
    governor.chunk_done(start_rss=20 * MB, peak_rss=25 * MB)
    assert governor.allowed == 4 and governor.queues
    assert not caplog.messages  # nothing to say while memory does not limit
    governor.chunk_done(start_rss=0, peak_rss=0)  # a worker that could not measure
    assert governor.allowed == 4


@pytest.mark.unit
def test_items_that_reuse_held_memory_run_one_at_a_time_once_workers_exceed_the_budget(
    fake_machine,
):
    # 3.13t's mimalloc keeps a finished item's memory: the next item reuses it and seems
    # to need nothing, while each idle worker holds 239 MB of a 600 MB budget.
    governor = MemoryGovernor(budget=600 * MB, n_workers=4)
    governor.chunk_done(start_rss=239 * MB, peak_rss=238 * MB)
    assert governor.need == 0
    assert governor.allowed == 1 and not governor.queues
    roomy = MemoryGovernor(budget=GB, n_workers=4)  # within the budget: all four
    roomy.chunk_done(start_rss=200 * MB, peak_rss=200 * MB)
    assert roomy.allowed == 4 and roomy.queues


@pytest.mark.unit
def test_a_sigkill_counted_by_the_kernel_is_out_of_memory(fake_machine, tmp_path):
    governor = MemoryGovernor(budget=GB, n_workers=4)
    assert not governor.killed_for_memory(-9)  # no OOM kill counted, far from the budget
    (tmp_path / "vmstat").write_text("oom_kill 1\n")
    assert not governor.killed_for_memory(1)  # not a SIGKILL
    assert governor.killed_for_memory(-9)
    assert governor.allowed == 3  # one fewer at once
    assert not governor.killed_for_memory(-9)  # the same kill counts once
    governor.chunk_done(start_rss=MB, peak_rss=2 * MB)  # small items: still at most 3
    assert governor.allowed == 3


@pytest.mark.unit
def test_a_sigkill_near_the_budget_is_out_of_memory(fake_machine):
    governor = MemoryGovernor(budget=GB, n_workers=2)
    governor.running([(10 * MB, 460 * MB), (10 * MB, 470 * MB)])
    assert governor.killed_for_memory(-9)  # 930 MB of 1 GB in use, counters or not
    assert governor.allowed == 1
    given = MemoryGovernor(budget=GB, n_workers=2, machine=False)  # max_memory: not the kernel's
    given.running([(10 * MB, 460 * MB), (10 * MB, 470 * MB)])
    assert not given.killed_for_memory(-9)


@pytest.mark.unit
def test_the_budget_is_max_memory_or_what_the_machine_and_cgroup_allow(fake_machine):
    assert memory_budget(5 * MB, held=GB) == 5 * MB  # given: it is the budget
    assert memory_budget(None, held=0) == 20 * GB // 1024 * 1024  # MemAvailable
    fake_machine(limit=3 * GB, usage=GB)
    assert memory_budget(None, held=100 * MB) == 2 * GB + 100 * MB  # the cgroup is lower


@pytest.mark.unit
def test_no_memory_information_means_no_budget(monkeypatch, tmp_path):
    monkeypatch.setattr(memory, "SOURCES", (str(tmp_path / "none"),) * 4)
    assert memory_budget(None, held=0) is None


@pytest.mark.unit
def test_max_memory_is_parsed_and_refused_where_it_cannot_hold():
    assert Options(max_memory="12GB").max_memory == 12 * GB
    assert Options(max_memory="500MiB").max_memory == 500 << 20
    assert Options(max_memory=1234).max_memory == 1234
    for bad in ("lots", "12 parsecs", "-1GB", 0):
        with pytest.raises(ValueError, match="max_memory"):
            Options(max_memory=bad)
    with pytest.raises(TypeError, match="max_memory"):
        Options(max_memory=1.5)
    with pytest.raises(ValueError, match="max_memory"):
        Options(max_memory="1GB", threadpool=True, n_workers=2)
    assert Options(max_memory="1GB", threadpool="auto").decided("threads").max_memory is None


# -- whole calls -------------------------------------------------------------------


@pytest.mark.integration
@pytest.mark.timeout(120)
@pytest.mark.parametrize("where", ["cgroup", "no cgroup", "this machine"])
def test_items_of_35_percent_run_two_at_a_time(where, fake_machine, tmp_path, caplog, monkeypatch):
    """8 items that each take 35% of the budget, on 4 workers: all come back, never
    more than two run at once after the first measurements, and no worker is killed."""
    caplog.set_level(logging.INFO, logger="fastparallel")
    budget = 600 * MB
    given: int | None = budget
    if where == "cgroup":  # max_memory=None: what the (fake) cgroup still allows
        fake_machine(limit=budget + GB, usage=GB)
        given = None
    elif where == "this machine":  # its real cgroups and /proc are read; max_memory given
        monkeypatch.setattr(memory, "SOURCES", _REAL_SOURCES)
    folder = tmp_path / "items"
    folder.mkdir()
    results = parallel(
        mh.hold,
        range(8),
        str(folder),
        int(0.35 * budget),
        n_workers=4,
        chunksize=1,
        max_memory=given,
    )
    assert [index for index, _ in results] == list(range(8))
    assert len({pid for _, pid in results}) <= 4  # no worker was replaced
    at_once = mh.concurrency(str(folder))
    # The first four may start together (nothing is measured yet); each one after them
    # starts once a measurement came back, with at most one other item running.
    assert max(n for index, n in at_once.items() if index >= 4) <= 2, at_once
    # two fit where an idle worker holds less than 45 MB; one where it holds more
    said = [m for m in caplog.messages if re.search(r"per item, running [12] at a time", m)]
    assert said, caplog.messages


@pytest.mark.integration
@pytest.mark.timeout(120)
def test_an_item_the_oom_killer_killed_runs_again_once(fake_machine, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="fastparallel")
    folder = tmp_path / "items"
    folder.mkdir()
    vmstat = str(tmp_path / "vmstat")
    results = parallel(mh.oom_once, range(6), str(folder), vmstat, 3, n_workers=2, chunksize=1)
    assert results == list(range(6))
    assert (folder / "attempts").read_text() == "2"
    died = [m for m in caplog.messages if "out of memory" in m]
    assert died and "item 3" in died[0], caplog.messages
    assert "running 1 at a time" in "\n".join(caplog.messages)  # fewer at once afterwards


@pytest.mark.integration
@pytest.mark.timeout(120)
def test_an_item_killed_for_memory_twice_fails_saying_so(fake_machine, tmp_path):
    folder = tmp_path / "items"
    folder.mkdir()
    vmstat = str(tmp_path / "vmstat")
    with pytest.raises(WorkerDiedError, match="out of memory") as caught:
        parallel(mh.oom_once, range(4), str(folder), vmstat, 1, times=2, n_workers=2, chunksize=1)
    assert caught.value.out_of_memory
    assert caught.value.indices == (1,)
    assert (folder / "attempts").read_text() == "2"
    # with retries, the OOM kill is one of the attempts: three in all here
    (folder / "attempts").unlink()
    results = parallel(
        mh.oom_once, range(4), str(folder), vmstat, 1, times=2, n_workers=2, chunksize=1, retries=2
    )
    assert results == list(range(4))
    assert (folder / "attempts").read_text() == "3"


@pytest.mark.integration
@pytest.mark.timeout(120)
def test_a_plain_sigkill_is_a_crash_not_memory(fake_machine):
    with pytest.raises(WorkerDiedError) as caught:
        parallel(mh.plain_kill, range(4), 2, n_workers=2, chunksize=1)
    assert not caught.value.out_of_memory
    assert "out of memory" not in str(caught.value).split("(it may")[0]


@pytest.mark.unit
def test_ample_memory_sends_at_once_and_measures_one_chunk_in_eight(fake_machine):
    governor = MemoryGovernor(budget=GB, n_workers=2)
    assert [governor.measure_next() for _ in range(3)] == [True] * 3  # nothing measured yet
    governor.chunk_done(start_rss=20 * MB, peak_rss=30 * MB)
    assert governor.ample  # 4 * 2 * 30 MB <= 1 GB
    assert sum(governor.measure_next() for _ in range(80)) == 10
    governor.chunk_done(start_rss=20 * MB, peak_rss=150 * MB)
    assert not governor.ample and governor.queues  # all run at once, every chunk measured
    assert all(governor.measure_next() for _ in range(10))
    assert not governor.sample_due(0.0) or not governor.sample_due(0.01)  # 50 ms apart


# -- advise(): memory per item, and when memory limits the speedup ----------------------


@pytest.mark.unit
def test_memory_fit_limits_the_workers_and_says_so():
    from fastparallel.auto.advice import MemoryFit
    from fastparallel.auto.explain import memory_text

    workers = {"serial": 1, "threads": 8, "processes": 8}
    fit = MemoryFit.of(3_100 * MB, 10 * GB, workers)
    assert fit.limited and fit.workers == {"serial": 1, "threads": 3, "processes": 3}
    text = memory_text(fit.per_item, fit.budget, fit.workers, workers)
    assert text.startswith("Memory, not CPU, limits the speedup: each item needs about 3.1 GB")
    assert "fit 3 at once where the CPUs would keep 8 busy" in text
    assert not MemoryFit.of(10 * MB, 10 * GB, workers).limited
    assert MemoryFit.of(None, 10 * GB, workers).workers == workers  # not measured


@pytest.mark.integration
@pytest.mark.timeout(120)
def test_advise_reports_memory_per_item_and_that_memory_limits():
    from fastparallel import advise

    advice = advise(mh.take, range(50), 200 * MB, n_workers=4, max_memory="450MB", max_seconds=1.0)
    assert advice.memory_per_item is not None and advice.memory_per_item >= 150 * MB
    assert advice.n_workers["processes"] <= 2
    assert any(r.startswith("Memory, not CPU, limits the speedup") for r in advice.reasons)
    assert "per item" in str(advice)
    small = advise(abs, range(1000), max_seconds=0.3)
    assert not any("Memory, not CPU" in r for r in small.reasons)


@pytest.mark.unit
def test_a_warm_pool_remembers_a_calls_memory(fake_machine):
    from fastparallel.backends.base import Measured

    remembered = Measured()
    first = MemoryGovernor(budget=GB, n_workers=4)
    first.remember(remembered)
    assert not first.measured  # nothing remembered yet: hold chunks until one reports
    first.chunk_done(start_rss=20 * MB, peak_rss=320 * MB)
    assert (remembered.rss_idle, remembered.rss_need) == (20 * MB, 300 * MB)
    again = MemoryGovernor(budget=GB, n_workers=4)
    again.remember(remembered)
    assert again.measured and again.allowed == 3  # (1 GB - 4 * 20 MB) // 300 MB


_RSS_SCRIPT = """
import json, os
from fastparallel import cpus
cpus.reset_peak_rss()
before = cpus.rss(os.getpid())
block = b"\\x01" * (64 << 20)  # every page written
during = cpus.rss(os.getpid())
peak = cpus.peak_rss()
print(json.dumps([before, during, peak]))
"""


@pytest.mark.integration
@pytest.mark.timeout(120)
def test_rss_of_a_process_and_its_peak():
    if not os.path.exists("/proc/self/statm"):
        pytest.skip("no /proc")
    # In a fresh interpreter: here, other tests' pool threads may free memory meanwhile
    # (seen on 3.13t under load), and RSS is the whole process's.
    src = str(Path(cpus.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(
        [sys.executable, "-c", _RSS_SCRIPT],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    before, during, peak = json.loads(done.stdout)
    assert before is not None and during is not None and peak is not None
    assert during >= before + (60 << 20)  # the block
    # The high-water mark since the reset includes the RSS of now (its counters may lag a
    # few pages behind statm's).
    assert peak >= during - (1 << 20)
    assert cpus.rss(2**22 + 12345) is None  # no such process
