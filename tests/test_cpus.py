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
