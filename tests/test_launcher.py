"""How worker processes start from fastparallel's template process (``method="template"``,
set for this module by ``FASTPARALLEL_METHOD``; the default forks the caller when that is
safe, see test_fork.py).

Scripts without a ``__main__`` guard, a top level that runs once, workers that follow the
caller's working directory, ``sys.path`` and environment, multiprocessing left alone in
workers, workers that cannot start, a killed caller, no named socket, ``shutdown()``, the
chunk sizes a warm pool remembers. Synchronisation is by handshake files, never by sleeps.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import types
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.integration

if str(Path(__file__).resolve().parent) not in sys.path:  # workers import faults_helpers by name
    sys.path.insert(0, str(Path(__file__).resolve().parent))

import faults_helpers as h
from faults_helpers import PROMPT, wait_for

import fastparallel
from fastparallel import WorkerDiedError, parallel
from fastparallel.backends.processes.wire.remote_errors import _RemoteTraceback

TEMPLATE_MODULE = "fastparallel.backends.processes.template.server"


@pytest.fixture(autouse=True)
def _template_method(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every call here (and every script it runs) starts workers from the template."""
    monkeypatch.setenv("FASTPARALLEL_METHOD", "template")


def _run(
    path: Path, *args: str, cwd: Path, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(path), *args],
        cwd=str(cwd),
        env=h.script_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _write(path: Path, source: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(source))
    return path


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def parent_pid(_: Any = None) -> int:
    return os.getppid()


def worker_fds(_: Any = None) -> list[str]:
    """What this worker's file descriptors above 2 point to."""
    out = []
    for name in os.listdir("/proc/self/fd"):
        try:
            if int(name) > 2:
                out.append(os.readlink(f"/proc/self/fd/{name}"))
        except OSError:
            pass  # the listing's own descriptor, closed by now
    return sorted(out)


# -- scripts: no guard, a top level that runs once, modules beside the script ----------------

NO_GUARD = """
    import os, sys
    from fastparallel import parallel

    def double(x):
        return 2 * x

    class Box:
        def __init__(self, value):
            self.value = value

    offset = 10
    print(parallel(double, range(6), n_workers=2))
    print(parallel(lambda x: x + offset, range(3), n_workers=2))
    print([b.value for b in parallel(Box, range(3), n_workers=2)])
    print(parallel(lambda b: Box(b.value * 3).value, [Box(1), Box(2)], n_workers=2))
"""


@pytest.mark.timeout(60)
def test_a_script_without_a_main_guard_runs(tmp_path: Path) -> None:
    script = _write(tmp_path / "script.py", NO_GUARD)
    proc = _run(script, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [
        "[0, 2, 4, 6, 8, 10]",
        "[10, 11, 12]",
        "[0, 1, 2]",
        "[3, 6]",
    ]
    assert proc.stderr == ""


TOP_LEVEL_ONCE = """
    import os, sys
    from fastparallel import parallel

    with open(sys.argv[1], "a") as marker:  # the top level: must run in the caller only
        marker.write(f"{os.getpid()}\\n")

    def pid(x):
        return os.getpid()

    pids = set()
    for _ in range(3):
        pids.update(parallel(pid, range(8), n_workers=2))
    pids.update(parallel(pid, range(12), n_workers=2, max_tasks_per_child=2))
    print(len(pids))
"""


@pytest.mark.timeout(60)
def test_the_top_level_of_a_script_runs_once(tmp_path: Path) -> None:
    script = _write(tmp_path / "script.py", TOP_LEVEL_ONCE)
    marker = tmp_path / "marker.txt"
    proc = _run(script, str(marker), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert int(proc.stdout) >= 6  # recycled workers: max_tasks_per_child started new ones
    assert len(marker.read_text().splitlines()) == 1, marker.read_text()


BESIDE = """
    from fastparallel import parallel
    import helpers_beside

    print(parallel(helpers_beside.triple, range(4), n_workers=2))
"""


@pytest.mark.timeout(60)
def test_modules_beside_the_script_are_importable_from_another_directory(tmp_path: Path) -> None:
    script = _write(tmp_path / "project" / "script.py", BESIDE)
    _write(tmp_path / "project" / "helpers_beside.py", "def triple(x):\n    return 3 * x\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    proc = _run(script, cwd=elsewhere)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[0, 3, 6, 9]"


# -- warm workers follow the caller ---------------------------------------------------------


def cwd_env_and_import(_: Any) -> tuple[str, str | None, int | None]:
    try:
        import follows_caller_module  # type: ignore[import-not-found]

        value: int | None = follows_caller_module.VALUE
    except ImportError:
        value = None
    return os.getcwd(), os.environ.get("FASTPARALLEL_TEST_VAR"), value


@pytest.mark.timeout(60)
def test_warm_workers_follow_chdir_environment_and_sys_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("FASTPARALLEL_TEST_VAR", raising=False)
    first = set(parallel(h.getpid, range(4), n_workers=2, chunksize=1))
    before = set(parallel(cwd_env_and_import, range(2), n_workers=2))
    assert before == {(os.getcwd(), None, None)}
    folder = tmp_path / "elsewhere"
    _write(folder / "follows_caller_module.py", "VALUE = 42\n")
    monkeypatch.chdir(folder)
    monkeypatch.setenv("FASTPARALLEL_TEST_VAR", "set")
    monkeypatch.syspath_prepend(str(folder))
    assert set(parallel(cwd_env_and_import, range(2), n_workers=2)) == {(str(folder), "set", 42)}
    monkeypatch.delenv("FASTPARALLEL_TEST_VAR")
    assert set(parallel(cwd_env_and_import, range(2), n_workers=2)) == {(str(folder), None, 42)}
    assert (
        set(parallel(h.getpid, range(4), n_workers=2, chunksize=1)) <= first
    )  # the same warm workers


def start_method_and_local_process(_: Any) -> tuple[str, int]:
    import multiprocessing as mp

    def local(queue: Any) -> None:  # a local function: only a fork can run it
        queue.put(os.getpid())

    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    process = ctx.Process(target=local, args=(queue,))
    process.start()
    child = queue.get(timeout=30)
    process.join(30)
    assert process.exitcode == 0 and child != os.getpid()
    return mp.get_start_method(), process.exitcode


@pytest.mark.timeout(60)
def test_multiprocessing_is_untouched_in_a_worker() -> None:
    default = subprocess.run(
        [sys.executable, "-c", "import multiprocessing as m; print(m.get_start_method())"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert parallel(start_method_and_local_process, range(2), n_workers=2) == [(default, 0)] * 2


# -- crashes and workers that cannot start ----------------------------------------------------


@pytest.mark.timeout(60)
def test_a_worker_killed_mid_item_is_a_child_of_the_template() -> None:
    template = parallel(parent_pid, range(2), n_workers=2)[0]
    assert TEMPLATE_MODULE in _cmdline(template)
    with pytest.raises(WorkerDiedError) as info:
        parallel(h.crash_on, range(6), n_workers=2, target=3, how="sigkill")
    assert info.value.exitcode == -9 and info.value.indices == (3,)
    assert "item 3 (3)" in str(info.value) and "SIGKILL" in str(info.value)
    assert parallel(parent_pid, range(2), n_workers=2) == [template, template]


def _unimportable_module() -> types.ModuleType:
    """A module that this process has but a worker cannot import (it exists nowhere on disk)."""
    module = types.ModuleType("fastparallel_test_nowhere")
    exec("def init():\n    pass\n", module.__dict__)  # noqa: S102 - a module with no file
    sys.modules[module.__name__] = module
    return module


@pytest.mark.timeout(60)
def test_a_worker_whose_initializer_cannot_be_loaded_could_not_start() -> None:
    module = _unimportable_module()
    try:
        with pytest.raises(ModuleNotFoundError) as info:
            parallel(h.square, range(4), n_workers=2, initializer=module.init)
    finally:
        del sys.modules[module.__name__]
    notes = "\n".join(getattr(info.value, "__notes__", []))
    assert "a worker process could not start" in notes
    assert "exited while running" not in str(info.value) + notes
    assert isinstance(info.value.__cause__, _RemoteTraceback)
    assert "fastparallel_test_nowhere" in str(info.value.__cause__)
    assert parallel(h.square, range(4), n_workers=2) == [0, 1, 4, 9]


def exit_at_start(code: int) -> None:
    os._exit(code)


@pytest.mark.timeout(60)
def test_a_worker_that_dies_while_starting_could_not_start() -> None:
    with pytest.raises(WorkerDiedError) as info:
        parallel(h.square, range(4), n_workers=2, initializer=exit_at_start, initargs=(3,))
    assert "could not start" in str(info.value) and "exited with code 3" in str(info.value)
    assert "while running" not in str(info.value)
    assert info.value.exitcode == 3 and info.value.indices == ()
    assert parallel(h.square, range(4), n_workers=2) == [0, 1, 4, 9]


# -- the template: a killed caller, no named socket, no stray descriptors, shutdown() ----------

CALLER = """
    import json, os, sys, time
    from pathlib import Path
    from fastparallel import parallel
    import faults_helpers as h

    def ppid(_):
        return os.getppid()

    out = Path(sys.argv[1])
    marks = out / "marks"
    marks.mkdir()
    template = parallel(ppid, range(2), n_workers=2)[0]
    h._write_atomic(out / "template.json", json.dumps(template))
    if sys.argv[2] == "busy":
        parallel(h.mark_then_block, range(2), n_workers=2, marks=str(marks), seconds=120)
    else:
        parallel(h.mark_then_block, range(2), n_workers=2, marks=str(marks), quick=(0, 1))
        h._write_atomic(out / "idle.json", "{}")
        time.sleep(120)
"""


@pytest.mark.timeout(60)
@pytest.mark.parametrize("state", ["busy", "idle"])
def test_the_template_and_workers_end_when_the_caller_is_killed(state: str, tmp_path: Path) -> None:
    script = _write(tmp_path / "caller.py", CALLER)
    with open(tmp_path / "stderr.txt", "w") as stderr:
        proc = subprocess.Popen(
            [sys.executable, str(script), str(tmp_path), state],
            cwd=str(tmp_path),
            env=h.script_env(),
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            start_new_session=True,
        )
    try:
        running = h.wait_marks(tmp_path / "marks", 2, timeout=30)
        if state == "idle":
            wait_for(lambda: (tmp_path / "idle.json").exists(), 30, "the call to finish")
        template = json.loads((tmp_path / "template.json").read_text())
        workers = {m["pid"] for m in running.values()}
        assert TEMPLATE_MODULE in _cmdline(template)
        assert all(h.proc_stat(pid)[1] == template for pid in workers)  # type: ignore[index]
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        h.wait_gone(workers | {template}, 10, "the template and workers of the killed caller")
    finally:
        h.kill_session(proc.pid)
        proc.wait()


def _unix_socket_paths() -> dict[str, str]:
    """inode -> bound path ('' for an unnamed socket) of every AF_UNIX socket."""
    paths = {}
    for line in Path("/proc/net/unix").read_text().splitlines()[1:]:
        fields = line.split()
        paths[fields[6]] = fields[7] if len(fields) > 7 else ""
    return paths


@pytest.mark.timeout(60)
def test_the_template_holds_no_named_socket_and_workers_only_their_pipes() -> None:
    fastparallel.shutdown()
    template = parallel(parent_pid, range(2), n_workers=2)[0]
    links = [os.readlink(f"/proc/{template}/fd/{fd}") for fd in os.listdir(f"/proc/{template}/fd")]
    sockets = [link[len("socket:[") : -1] for link in links if link.startswith("socket:")]
    assert len(sockets) == 1, links  # the socketpair end it was started with
    paths = _unix_socket_paths()
    assert all(paths.get(inode, "") == "" for inode in sockets), (sockets, paths)
    # Each worker holds its own two pipes, its current-item slot and its unnamed socket for
    # shared-memory descriptors (and stdin, stdout, stderr): nothing of the template, of
    # this process or of the other worker.
    fds = parallel(worker_fds, range(2), n_workers=2, chunksize=1)
    paths = _unix_socket_paths()
    for held in fds:
        pipes = [link for link in held if link.startswith("pipe:")]
        sockets = [link[len("socket:[") : -1] for link in held if link.startswith("socket:")]
        assert len(pipes) == 2 and len(sockets) == 1 and len(held) == 4, fds
        assert "fastparallel-slot" in held[0] and paths.get(sockets[0], "") == "", (fds, paths)
    assert set(fds[0][1:]).isdisjoint(fds[1])


@pytest.mark.timeout(60)
def test_shutdown_stops_the_template_and_a_later_call_starts_a_new_one() -> None:
    template = parallel(parent_pid, range(2), n_workers=2)[0]
    assert h.pid_alive(template)
    fastparallel.shutdown()
    h.wait_gone([template], PROMPT, "the template after shutdown()")
    again = parallel(parent_pid, range(2), n_workers=2)
    assert again[0] == again[1] != template and TEMPLATE_MODULE in _cmdline(again[0])


FORKED_CALLER = """
    import os, sys
    from fastparallel import parallel

    def ppid(_):
        return os.getppid()

    first = parallel(ppid, range(2), n_workers=2)[0]
    read, write = os.pipe()
    child = os.fork()
    if child == 0:
        os.close(read)
        second = parallel(ppid, range(2), n_workers=2)[0]
        os.write(write, str(second).encode())
        os._exit(0)
    os.close(write)
    second = int(os.read(read, 100))
    os.waitpid(child, 0)
    print(first != second, parallel(ppid, range(2), n_workers=2)[0] == first)
"""


@pytest.mark.timeout(60)
def test_a_forked_child_starts_its_own_template(tmp_path: Path) -> None:
    proc = _run(_write(tmp_path / "script.py", FORKED_CALLER), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["True", "True"]


# -- chunk sizes ---------------------------------------------------------------------------------


def test_a_warm_pool_remembers_chunk_sizes_of_the_same_call(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from fastparallel.backends.processes import pool as processes

    sizes: list[int] = []
    submit = processes.ProcessPool.submit

    def recording(self: Any, chunk: Any) -> None:
        sizes.append(len(chunk.items))
        submit(self, chunk)

    monkeypatch.setattr(processes.ProcessPool, "submit", recording)
    fastparallel.shutdown()
    assert parallel(h.square, range(400), n_workers=1) == [x * x for x in range(400)]
    assert sizes[:2] == [1, 1]  # the first call measures with one-item chunks
    sizes.clear()
    assert parallel(h.square, range(400), n_workers=1) == [x * x for x in range(400)]
    assert sizes[0] == 1 and sizes[1] == 100, sizes  # from the second chunk on: the cap, 400 / 4
    sizes.clear()
    parallel(h.getpid, range(400), n_workers=1)  # another function: measured anew
    assert sizes[:2] == [1, 1]


def two_parents(_: Any) -> int:
    return os.getppid()


@pytest.mark.timeout(60)
def test_pools_of_several_threads_share_one_template() -> None:
    from concurrent.futures import ThreadPoolExecutor

    def call(i: int) -> list[int]:
        # Different initializers and max_tasks_per_child: three different pools.
        options: dict[str, Any] = [
            {},
            {"initializer": h.square, "initargs": (1,)},
            {"max_tasks_per_child": 3},
        ][i]
        return parallel(two_parents, range(6), n_workers=2, **options)

    with ThreadPoolExecutor(3) as threads:
        parents = {p for result in threads.map(call, range(3)) for p in result}
    assert len(parents) == 1 and TEMPLATE_MODULE in _cmdline(parents.pop())
