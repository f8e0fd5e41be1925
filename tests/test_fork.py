"""The default start (``method=None`` on Linux): fork the caller when that is safe, else the
template, which preloads the call's modules; ``FASTPARALLEL_METHOD``; what forked workers
promise (they end with a killed caller, need no ``__main__`` guard, run the top level once,
see the caller's module state). Synchronisation is by files and events, never by sleeps.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import textwrap
import threading
from pathlib import Path

import pytest

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the fork path is Linux's"),
]

if str(Path(__file__).resolve().parent) not in sys.path:  # workers import faults_helpers by name
    sys.path.insert(0, str(Path(__file__).resolve().parent))

import faults_helpers as h

import fastparallel
from fastparallel import parallel
from fastparallel.backends.processes import forksafe
from fastparallel.backends.processes.launch import needed_modules

TEMPLATE_MODULE = "fastparallel.backends.processes.template.server"


@pytest.fixture(autouse=True)
def _fresh(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FASTPARALLEL_METHOD", raising=False)
    fastparallel.shutdown()  # each test decides how its pool starts
    # Threads that earlier tests left in this process (Dask's offload thread, say) would
    # rightly send every pool to the template; each test here judges only its own threads.
    earlier = {t for t in threading.enumerate() if t is not threading.main_thread()}
    judge = forksafe._thread_reason
    monkeypatch.setattr(forksafe, "_thread_reason", lambda t: "" if t in earlier else judge(t))


def _cmdline(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()


def _parents(n: int = 2) -> list[int]:
    return parallel(h.getppid, range(n), n_workers=n)


# -- the choice -----------------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_workers_are_forks_of_the_caller_when_that_is_safe(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.INFO, logger="fastparallel"):
        assert _parents() == [os.getpid(), os.getpid()]
    assert "2 workers start as fork of the caller" in caplog.text


@pytest.mark.timeout(60)
def test_workers_fork_from_a_caller_whose_stderr_has_no_descriptor(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import io

    monkeypatch.setattr(sys, "stderr", io.StringIO())  # as pytest's capsys, a GUI's console
    assert _parents() == [os.getpid(), os.getpid()]


@pytest.mark.timeout(60)
def test_a_thread_of_the_callers_sends_workers_to_the_template(
    caplog: pytest.LogCaptureFixture,
) -> None:
    release = threading.Event()
    thread = threading.Thread(target=release.wait, name="my-thread")
    thread.start()
    try:
        with caplog.at_level(logging.INFO, logger="fastparallel"):
            parents = _parents()
    finally:
        release.set()
        thread.join()
    assert parents[0] == parents[1] != os.getpid() and TEMPLATE_MODULE in _cmdline(parents[0])
    assert "start as template: a Python thread is running ('my-thread')" in caplog.text


@pytest.mark.unit
def test_fastparallels_idle_threads_and_a_kernels_threads_are_fork_safe() -> None:
    assert parallel(h.square, range(8), threadpool=True, n_workers=2) == [x * x for x in range(8)]
    assert forksafe.unsafe_reason() == ""  # the idle thread pool's threads do not count
    release = threading.Event()

    class KernelThread(threading.Thread):  # as ipykernel's IOPub, heartbeat, control threads
        __module__ = "ipykernel.iostream"

    kernel = KernelThread(target=release.wait)
    kernel.start()
    try:
        assert forksafe.unsafe_reason() == ""
    finally:
        release.set()
        kernel.join()


@pytest.mark.timeout(60)
def test_the_environment_variable_chooses_the_method(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FASTPARALLEL_METHOD", "template")
    template = _parents()[0]
    assert template != os.getpid() and TEMPLATE_MODULE in _cmdline(template)
    monkeypatch.setenv("FASTPARALLEL_METHOD", "spawn")  # read at each call
    assert parallel(h.square, range(3), n_workers=2) == [0, 1, 4]
    monkeypatch.setenv("FASTPARALLEL_METHOD", "forkk")
    started: list[int] = []
    with pytest.raises(ValueError, match=r"FASTPARALLEL_METHOD='forkk' is not a start method"):
        parallel(started.append, range(3), n_workers=2)
    assert parallel(h.square, range(3), threadpool=True) == [0, 1, 4]  # threads ignore it


@pytest.mark.unit
def test_the_modules_a_pickled_call_needs_are_named_as_sys_modules_names_them() -> None:
    import fractions
    import pickle
    from functools import partial

    import faults_helpers

    body = pickle.dumps((partial(faults_helpers.square), (fractions.Fraction(1, 3),), {}))
    assert needed_modules(body) == ["functools", "faults_helpers", "fractions"]


# -- module state, top level, __main__ guard, a killed caller -------------------------------

MODULE = """
SETTING = "as imported"
def read(_):
    return SETTING
"""


@pytest.mark.timeout(60)
def test_module_state_changed_at_run_time_is_seen_by_forked_workers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "mylib_fork.py").write_text(MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    import mylib_fork

    mylib_fork.SETTING = "changed"
    assert parallel(mylib_fork.read, range(4), n_workers=2) == ["changed"] * 4
    monkeypatch.setenv("FASTPARALLEL_METHOD", "template")  # the template imports it afresh
    assert parallel(mylib_fork.read, range(2), n_workers=2) == ["as imported"] * 2


SCRIPT = """
import os, sys
from pathlib import Path
from fastparallel import parallel
with open(Path(sys.argv[1]) / "top.txt", "a") as f:
    f.write(f"{os.getpid()}\\n")
def square(x):
    return x * x
print(parallel(square, range(6), n_workers=2), flush=True)
print(parallel(lambda x: x + 1, range(3), n_workers=2), flush=True)
"""


@pytest.mark.timeout(120)
@pytest.mark.parametrize("method", ["", "template"])
def test_a_script_needs_no_main_guard_and_its_top_level_runs_once(
    method: str, tmp_path: Path
) -> None:
    script = tmp_path / "noguard.py"
    script.write_text(textwrap.dedent(SCRIPT))
    env = {**h.script_env(), "FASTPARALLEL_METHOD": method}
    import subprocess

    done = subprocess.run(
        [sys.executable, str(script), str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=100,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:2] == ["[0, 1, 4, 9, 16, 25]", "[1, 2, 3]"]
    assert len((tmp_path / "top.txt").read_text().split()) == 1


KILLED = """
marks = OUT / "marks"
marks.mkdir()
dump("parents.json", parallel(h.getppid, range(2), n_workers=2))
if sys.argv[2] == "busy":
    parallel(h.mark_then_block, range(2), n_workers=2, marks=str(marks), seconds=120)
else:
    parallel(h.mark_then_block, range(2), n_workers=2, marks=str(marks), quick=(0, 1))
    dump("idle.json", {})
    time.sleep(120)
"""


@pytest.mark.timeout(60)
@pytest.mark.parametrize("state", ["busy", "idle"])
def test_forked_workers_end_when_the_caller_is_killed(state: str, tmp_path: Path) -> None:
    proc = h.start_script(tmp_path, KILLED, [state])
    try:
        running = h.wait_marks(tmp_path / "marks", 2, timeout=30)
        if state == "idle":
            h.wait_for(lambda: (tmp_path / "idle.json").exists(), 30, "the call to finish")
        assert json.loads((tmp_path / "parents.json").read_text()) == [proc.pid, proc.pid]
        workers = {m["pid"] for m in running.values()}
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        h.wait_gone(workers, 10, "the forked workers of the killed caller")
    finally:
        h.kill_session(proc.pid)
        proc.wait()


# -- safety: OpenMP threads, a thread that logs and prints, a Jupyter kernel ----------------

OPENMP = """
import logging
logging.basicConfig(level=logging.INFO, format="%(message)s")
import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier
X = np.random.default_rng(0).random((400, 5))
y = (X[:, 0] > 0.5).astype(int)
def fit(seed):
    model = HistGradientBoostingClassifier(max_iter=5, random_state=seed)
    return round(float(model.fit(X, y).score(X, y)), 3)
first = fit(0)  # GNU OpenMP's threads start here, in the caller
dump("scores.json", [first, parallel(fit, range(4), n_workers=2)])
"""


@pytest.mark.integration
@pytest.mark.timeout(300)
def test_a_caller_with_openmp_threads_running_maps_the_same_fit_without_hanging(
    tmp_path: Path,
) -> None:
    pytest.importorskip("sklearn")
    done = h.run_script(tmp_path, OPENMP, timeout=240)
    assert done.returncode == 0, done.stderr
    first, scores = json.loads((tmp_path / "scores.json").read_text())
    assert scores == [first] * 4
    assert "start as template: OpenMP threads are running (libgomp)" in done.stderr


CHATTY = """
import logging, threading
logging.basicConfig(level=logging.INFO, filename=str(OUT / "log.txt"))
log = logging.getLogger("chatty")
stop = threading.Event()
def chatter():
    while not stop.is_set():
        log.info("caller thread")
        print("caller thread", flush=True)
thread = threading.Thread(target=chatter, name="chatter")
thread.start()
def work(x):
    logging.getLogger("work").warning("item %s", x)
    print("item", x, flush=True)
    return x * 2
results = [parallel(work, range(8), n_workers=2) for _ in range(20)]
stop.set()
thread.join()
dump("results.json", results)
"""


@pytest.mark.integration
@pytest.mark.timeout(300)
def test_a_caller_thread_that_logs_and_prints_never_hangs_twenty_process_calls(
    tmp_path: Path,
) -> None:
    done = h.run_script(tmp_path, CHATTY, timeout=240)
    assert done.returncode == 0, done.stderr
    assert json.loads((tmp_path / "results.json").read_text()) == [[x * 2 for x in range(8)]] * 20
    assert "item 7" in done.stdout


@pytest.mark.integration
@pytest.mark.timeout(300)
def test_in_a_jupyter_kernel_workers_fork_the_kernel_and_print(tmp_path: Path) -> None:
    """The decision for notebooks: the kernel's own I/O threads (IOPub, heartbeat, control,
    history; libzmq's) do not make fork unsafe, as with fastcore and multiprocessing's fork."""
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    import test_notebook

    cells = [
        (
            "import os\nfrom fastparallel import parallel\n"
            "from fastparallel.backends.processes.forksafe import unsafe_reason\n"
            "print('reason:', repr(unsafe_reason()))"
        ),
        "print('forked:', parallel(lambda x: os.getppid(), range(2), n_workers=2) == [os.getpid()] * 2)",
        "print('results:', parallel(lambda x: print('worker', x) or x, range(4), n_workers=2))",
    ]
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    env = pytest.MonkeyPatch()
    try:
        env.setenv("JUPYTER_PATH", str(test_notebook._install_kernelspec(tmp_path)))
        env.setenv("PYTHONPATH", os.pathsep.join([str(h.SRC_DIR), str(h.TESTS_DIR)]))
        nbclient.NotebookClient(nb, kernel_name="python3", timeout=120).execute()
    finally:
        env.undo()
    text = "".join(test_notebook._text(o) for cell in nb.cells for o in cell.outputs)
    assert "reason: ''" in text
    assert "forked: True" in text
    assert "results: [0, 1, 2, 3]" in text


# -- issue 21: faults 3 (initializer's context), 4 (a fork of the caller), 5 (fn forks), 7 --


def _initializer(path_entry: str, directory: str) -> None:
    os.environ["SET_BY_INITIALIZER"] = "yes"
    sys.path.insert(0, path_entry)
    os.chdir(directory)


def _what_a_worker_sees(_: object) -> tuple[str | None, str | None, str, str]:
    return (
        os.environ.get("SET_BY_INITIALIZER"),
        os.environ.get("CHANGED_BY_CALLER"),
        sys.path[0],
        os.getcwd(),
    )


@pytest.mark.timeout(60)
@pytest.mark.parametrize("method", ["", "template"])
def test_what_the_initializer_set_lasts_when_the_caller_changes_its_context(
    method: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FASTPARALLEL_METHOD", method)
    entry, directory = str(tmp_path / "entry"), str(tmp_path)
    options = {"n_workers": 2, "initializer": _initializer, "initargs": (entry, directory)}
    first = parallel(_what_a_worker_sees, range(4), **options)
    assert first == [("yes", None, entry, directory)] * 4
    monkeypatch.setenv("CHANGED_BY_CALLER", "1")  # the next call brings this change only
    assert (
        parallel(_what_a_worker_sees, range(4), **options) == [("yes", "1", entry, directory)] * 4
    )


FORKS_AND_LIVES = """
marks = OUT / "marks"
marks.mkdir()
parents = parallel(h.getppid, range(2), n_workers=2)
parallel(h.mark, range(2), str(marks), n_workers=2)
child = os.fork()
if child == 0:  # a fork of the caller that outlives it, holding what it inherited
    time.sleep(120)
    os._exit(0)
dump("pids.json", {"parents": parents, "child": child})
time.sleep(120)
"""


@pytest.mark.timeout(60)
@pytest.mark.parametrize("method", ["", "template"])
def test_workers_end_with_a_killed_caller_whose_fork_lives_on(method: str, tmp_path: Path) -> None:
    os.environ["FASTPARALLEL_METHOD"] = method  # for the script (the fixture unsets it after)
    proc = h.start_script(tmp_path, FORKS_AND_LIVES)
    try:
        pids = h.wait_for(lambda: (tmp_path / "pids.json").exists(), 30, "the script's fork")
        pids = json.loads((tmp_path / "pids.json").read_text())
        workers = h.marked_pids(tmp_path / "marks")
        assert len(workers) == 2 and h.pid_alive(pids["child"])
        starters = set(pids["parents"])  # the caller itself, or the template
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        h.wait_gone(workers | starters, 10, "the workers (and template) of the killed caller")
        assert h.pid_alive(pids["child"])  # it still lives, and held nothing of them
    finally:
        os.environ.pop("FASTPARALLEL_METHOD", None)
        h.kill_session(proc.pid)
        proc.wait()


FN_FORKS = """
def fork_and_return(x):
    os.fork()  # the child returns too, into the worker's loop
    return x * 10
print(parallel(fork_and_return, range(6), n_workers=2), flush=True)
print(parallel(fork_and_return, range(6), n_workers=2, chunksize=3), flush=True)
"""


@pytest.mark.timeout(120)
@pytest.mark.parametrize("method", ["", "template"])
def test_a_child_that_fn_forks_never_reports_and_exits(method: str, tmp_path: Path) -> None:
    import subprocess

    script = h.write_script(tmp_path, FN_FORKS)
    env = {**h.script_env(), "FASTPARALLEL_METHOD": method}
    # stdout is a pipe, as in `python x.py | tail`: it closes only once every child has exited.
    done = subprocess.run(
        [sys.executable, str(script), str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=100,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:2] == ["[0, 10, 20, 30, 40, 50]"] * 2
    assert "KeyError" not in done.stderr and "Traceback" not in done.stderr


INTERRUPTED_START = """
from fastparallel.backends.processes.template import client
real = client._template_path
def interrupted():
    raise KeyboardInterrupt  # Ctrl-C while the template boots
client._template_path = interrupted
try:
    parallel(h.square, range(4), n_workers=2)
except KeyboardInterrupt:
    print("interrupted", flush=True)
client._template_path = real
fastparallel.shutdown()
children = []
for task in os.listdir("/proc/self/task"):
    children += Path(f"/proc/self/task/{task}/children").read_text().split()
dump("children.json", [h.proc_stat(int(pid)) for pid in children])
print(parallel(h.square, range(4), n_workers=2), flush=True)
"""


@pytest.mark.timeout(120)
def test_ctrl_c_while_the_template_starts_prints_nothing_and_leaves_no_zombie(
    tmp_path: Path,
) -> None:
    os.environ["FASTPARALLEL_METHOD"] = "template"  # for the script
    try:
        done = h.run_script(tmp_path, INTERRUPTED_START, timeout=100)
    finally:
        os.environ.pop("FASTPARALLEL_METHOD", None)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:2] == ["interrupted", "[0, 1, 4, 9]"]
    assert done.stderr == ""
    assert json.loads((tmp_path / "children.json").read_text()) == []


# -- the template preloads what the call needs; the caller's warnings filters ---------------

HEAVY = """
import os, sys
with open(os.environ["IMPORTS_LOG"], "a") as log:
    log.write(f"{__name__} {os.getpid()}\\n")
if __name__.endswith("threads"):
    import threading
    RELEASE = threading.Event()
    THREAD = threading.Thread(target=RELEASE.wait, daemon=True)
    THREAD.start()

    def stop():  # in the caller, after the test: its thread would send later tests' pools to the template
        RELEASE.set()
        THREAD.join(10)
def work(x):
    return x + 1
"""


@pytest.mark.timeout(120)
def test_the_template_imports_the_calls_modules_once_and_later_calls_add_more(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    request: pytest.FixtureRequest,
) -> None:
    for name in ("heavy_one", "heavy_two", "heavy_threads"):
        (tmp_path / f"{name}.py").write_text(HEAVY)
    log = tmp_path / "imports.txt"
    monkeypatch.setenv("IMPORTS_LOG", str(log))
    monkeypatch.setenv("FASTPARALLEL_METHOD", "template")
    monkeypatch.syspath_prepend(str(tmp_path))
    import heavy_one
    import heavy_threads
    import heavy_two

    request.addfinalizer(heavy_threads.stop)

    def imports(name: str) -> int:
        return sum(1 for line in log.read_text().splitlines() if line.split()[0] == name)

    assert parallel(heavy_one.work, range(8), n_workers=4) == list(range(1, 9))
    assert imports("heavy_one") == 2  # the caller, and the template: not each of 4 workers
    # Another pool (max_tasks_per_child: its own key) from the same template: it adds one.
    assert parallel(heavy_two.work, range(8), n_workers=4, max_tasks_per_child=99) == list(
        range(1, 9)
    )
    assert imports("heavy_two") == 2
    importers = {line.split()[1] for line in log.read_text().splitlines()} - {str(os.getpid())}
    assert len(importers) == 1  # both in the same template
    # A module whose import starts a thread would make the template's forks unsafe: the
    # template stops, and its replacement leaves that module to the workers.
    fastparallel.shutdown()
    with caplog.at_level(logging.INFO, logger="fastparallel"):
        assert parallel(heavy_threads.work, range(8), n_workers=4) == list(range(1, 9))
    assert "importing heavy_threads there started threads" in caplog.text
    assert imports("heavy_threads") == 2 + 4  # caller, refused template, each worker


WARNS = """
import warnings
if sys.argv[2] == "ignore":
    warnings.filterwarnings("ignore", category=FutureWarning)
def warn(x):
    warnings.warn("a future change", FutureWarning)
    return x
print(parallel(warn, range(4), n_workers=2), flush=True)
"""


@pytest.mark.timeout(120)
@pytest.mark.parametrize("method", ["", "template"])
@pytest.mark.parametrize("filters", ["ignore", "default"])
def test_the_callers_warnings_filters_apply_in_workers(
    method: str, filters: str, tmp_path: Path
) -> None:
    os.environ["FASTPARALLEL_METHOD"] = method
    try:
        done = h.run_script(tmp_path, WARNS, timeout=100, args=[filters])
    finally:
        os.environ.pop("FASTPARALLEL_METHOD", None)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("[0, 1, 2, 3]")
    assert ("FutureWarning: a future change" in done.stderr) == (filters == "default")


def _inner(x: int) -> tuple[int, int]:
    return x, os.getppid()


def _outer(x: int) -> list[tuple[int, int]]:
    return [
        (item, parent == os.getpid()) for item, parent in parallel(_inner, range(2), n_workers=2)
    ]


@pytest.mark.timeout(60)
def test_a_forked_worker_forks_its_own_nested_pool() -> None:
    assert parallel(_outer, range(2), n_workers=2) == [[(0, True), (1, True)]] * 2
