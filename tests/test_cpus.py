"""CPU limits read where containers and systemd put them: fake cgroup trees, v1 and v2."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from fastparallel import cpus

pytestmark = pytest.mark.unit


def tree(tmp_path: Path, membership: str, files: dict[str, str]) -> cpus.Cgroups:
    """A fake ``/sys/fs/cgroup`` (``files``: path below it -> content) and
    ``/proc/self/cgroup`` (``membership``)."""
    root = tmp_path / "cgroup"
    root.mkdir(parents=True)
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
    proc = tmp_path / "proc-self-cgroup"
    proc.write_text(membership)
    return cpus.Cgroups(root=str(root), proc=str(proc))


def test_v2_reads_the_process_own_cgroup_not_only_the_root(tmp_path):
    scope = "user.slice/user-1000.slice/app.slice/tmux.scope"
    groups = tree(
        tmp_path,
        f"0::/{scope}\n",
        {"cgroup.controllers": "cpu memory", f"{scope}/cpu.max": "150000 100000\n"},
    )
    assert groups.cpu_limit() == 1.5
    assert cpus.count_cpus(groups) == min(os.cpu_count() or 1, 2, _affinity())


def test_v2_takes_the_tightest_limit_up_the_hierarchy(tmp_path):
    groups = tree(
        tmp_path,
        "0::/outer/inner\n",
        {
            "cgroup.controllers": "cpu",
            "cpu.max": "max 100000\n",
            "outer/cpu.max": "100000 100000\n",
            "outer/inner/cpu.max": "400000 100000\n",
        },
    )
    assert groups.cpu_limit() == 1.0
    assert cpus.count_cpus(groups) == 1


def test_v2_without_limits_and_with_odd_files(tmp_path):
    groups = tree(
        tmp_path,
        "0::/a\n",
        {"cgroup.controllers": "cpu", "a/cpu.max": "max 100000\n", "cpu.max": ""},
    )
    assert groups.cpu_limit() is None  # an empty cpu.max (seen in containers) is no limit


def test_a_host_path_the_container_mount_lacks_falls_back_to_what_exists(tmp_path):
    # Without a cgroup namespace a process sees the host's path, while the mount holds
    # only its own cgroup's folder (here: its last part) or nothing below the root.
    groups = tree(
        tmp_path,
        "0::/docker/abc123\n",
        {"cgroup.controllers": "cpu", "abc123/cpu.max": "200000 100000\n"},
    )
    assert groups.cpu_limit() == 2.0
    root_only = tree(
        tmp_path / "second",
        "0::/kubepods/pod1/c2\n",
        {"cgroup.controllers": "cpu", "cpu.max": "50000 100000\n"},
    )
    assert root_only.cpu_limit() == 0.5


def test_v1_reads_the_cpu_controller_path(tmp_path):
    groups = tree(
        tmp_path,
        "5:memory:/job\n4:cpu,cpuacct:/job/step\n0::/\n",
        {
            "cpu,cpuacct/cpu.cfs_quota_us": "-1\n",
            "cpu,cpuacct/cpu.cfs_period_us": "100000\n",
            "cpu,cpuacct/job/cpu.cfs_quota_us": "300000\n",
            "cpu,cpuacct/job/cpu.cfs_period_us": "100000\n",
            "cpu,cpuacct/job/step/cpu.cfs_quota_us": "-1\n",
            "cpu,cpuacct/job/step/cpu.cfs_period_us": "100000\n",
        },
    )
    assert groups.cpu_limit() == 3.0


def test_no_cgroups_at_all(tmp_path):
    groups = cpus.Cgroups(root=str(tmp_path / "none"), proc=str(tmp_path / "none"))
    assert groups.cpu_limit() is None
    assert cpus.count_cpus(groups) == min(os.cpu_count() or 1, _affinity())


def _affinity() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 10**6


# -- memory: what the cgroups still allow, MemAvailable, OOM kills ----------------------

GiB = 1 << 30


def meminfo(tmp_path: Path, available_kib: int) -> str:
    path = tmp_path / "meminfo"
    path.write_text(f"MemTotal:       99999999 kB\nMemAvailable:   {available_kib} kB\n")
    return str(path)


def test_v2_memory_free_is_the_tightest_limit_minus_usage_up_the_hierarchy(tmp_path):
    groups = tree(
        tmp_path,
        "0::/outer/inner\n",
        {
            "cgroup.controllers": "cpu memory",
            "outer/memory.max": f"{8 * GiB}\n",
            "outer/memory.current": f"{6 * GiB}\n",  # 2 GiB left here
            "outer/inner/memory.max": f"{4 * GiB}\n",
            "outer/inner/memory.current": f"{1 * GiB}\n",  # 3 GiB left here
            "outer/inner/memory.events": "low 0\nhigh 0\nmax 4\noom 2\noom_kill 2\n",
            "outer/memory.events": "low 0\noom_kill 1\n",
        },
    )
    assert groups.memory_free() == 2 * GiB
    assert groups.oom_kills() == 3
    # MemAvailable is the limit where it is lower than what the cgroups allow
    assert cpus.available_memory(groups, meminfo(tmp_path, 1024 * 1024)) == GiB
    assert cpus.available_memory(groups, meminfo(tmp_path, 16 * 1024 * 1024)) == 2 * GiB


def test_v2_memory_max_is_no_limit(tmp_path):
    groups = tree(
        tmp_path,
        "0::/a\n",
        {"cgroup.controllers": "memory", "a/memory.max": "max\n", "a/memory.current": "5\n"},
    )
    assert groups.memory_free() is None
    assert groups.oom_kills() == 0
    assert cpus.available_memory(groups, meminfo(tmp_path, 4)) == 4096


def test_v1_reads_the_memory_controller_path(tmp_path):
    no_limit = str(9223372036854771712)
    groups = tree(
        tmp_path,
        "4:memory:/job/step\n3:cpu,cpuacct:/\n0::/\n",
        {
            "memory/memory.limit_in_bytes": no_limit,
            "memory/memory.usage_in_bytes": f"{20 * GiB}",
            "memory/job/memory.limit_in_bytes": f"{3 * GiB}",
            "memory/job/memory.usage_in_bytes": f"{GiB}",
            "memory/job/step/memory.limit_in_bytes": no_limit,
            "memory/job/step/memory.usage_in_bytes": "100",
            "memory/job/step/memory.oom_control": "oom_kill_disable 0\nunder_oom 0\noom_kill 5\n",
        },
    )
    assert groups.memory_free() == 2 * GiB
    assert groups.oom_kills() == 5
    vmstat = tmp_path / "vmstat"
    vmstat.write_text("pgfault 10\noom_kill 2\n")
    assert cpus.oom_kills(groups, str(vmstat)) == 7


def test_a_usage_above_the_limit_leaves_nothing(tmp_path):
    groups = tree(
        tmp_path,
        "0::/\n",
        {"cgroup.controllers": "memory", "memory.max": "100\n", "memory.current": "150\n"},
    )
    assert groups.memory_free() == 0


def test_no_memory_information_at_all(tmp_path):
    groups = cpus.Cgroups(root=str(tmp_path / "none"), proc=str(tmp_path / "none"))
    assert groups.memory_free() is None
    assert cpus.available_memory(groups, str(tmp_path / "none")) is None
    assert cpus.oom_kills(groups, str(tmp_path / "none")) == 0
