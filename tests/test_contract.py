"""The contract of parallel(): every point of the API, on serial, threads and processes."""

from __future__ import annotations

import itertools
import multiprocessing
import os
import pickle
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import faults_helpers
import pytest

import fastparallel
from fastparallel import ParallelTimeoutError, num_cpus, parallel, shutdown
from fastparallel.backends.base import Started
from fastparallel.backends.processes.wire.remote_errors import _RemoteTraceback
from fastparallel.core.chunking import ChunkSizer
from fastparallel.core.dispatch import Dispatcher

pytestmark = pytest.mark.integration

BACKENDS = {
    "serial": {"n_workers": 0},
    "threads": {"threadpool": True},
    "processes": {},
}


@pytest.fixture(params=list(BACKENDS))
def backend(request: pytest.FixtureRequest) -> dict:
    return dict(BACKENDS[request.param])


# -- functions sent to workers (importable from this module) ----------------------------
def ordered_call(a, b, item, c=0, d=0):
    return (a, b, item, c, d)


def square(x):
    return x * x


def where(x):
    return os.getpid(), threading.get_ident()


def fail_on_three(x):
    if x == 3:
        raise KeyError(f"no {x}")
    return x


def sleep_then(x):
    time.sleep(x)
    return x


def record_start(path, x):
    started = (
        time.monotonic()
    )  # before opening the file: a first open in a new worker can take a while
    with open(path, "a") as f:
        f.write(f"{x} {started}\n")
    return x


def init_writer(path):
    with open(path, "a") as f:
        f.write(f"{os.getpid()}-{threading.get_ident()}\n")


def pid_of(x):
    return os.getpid()


def nested(x):
    total = sum(parallel(square, range(x)))
    return total, len(multiprocessing.active_children())


class CountsUnpickling:
    """Appends a line to ``path`` each time it is unpickled (in a worker)."""

    pickled = 0

    def __init__(self, path, size=0):
        self.path = path
        self.blob = b"x" * size

    def __reduce__(self):
        CountsUnpickling.pickled += 1
        return (_unpickled, (self.path, len(self.blob)))


def _unpickled(path, size):
    with open(path, "a") as f:
        f.write("unpickled\n")
    obj = CountsUnpickling.__new__(CountsUnpickling)
    obj.path, obj.blob = path, b"x" * size
    return obj


def uses_big(x, big=None):
    return x + len(big.blob)


def run_script(code: str, timeout: float = 60, **kwargs) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path(__file__).parent), *sys.path]))
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        **kwargs,
        check=False,
    )


# -- calling convention and results ------------------------------------------------------
def test_fn_called_like_fastcore(backend):
    out = parallel(ordered_call, [1, 2, 3], "a", "b", c=5, d=6, **backend)
    assert out == [("a", "b", i, 5, 6) for i in [1, 2, 3]]
    assert type(out) is list


def test_results_in_input_order(backend):
    items = [0.05, 0.0, 0.03, 0.0, 0.01, 0.0]
    assert parallel(sleep_then, items, **backend) == items
    assert parallel(square, range(5000), **backend) == [x * x for x in range(5000)]


def test_where_work_runs():
    me = os.getpid(), threading.get_ident()
    serial = set(parallel(where, range(8), n_workers=0))
    assert serial == {me}
    threads = set(parallel(where, range(50), threadpool=True, n_workers=4, chunksize=1))
    assert {pid for pid, _ in threads} == {os.getpid()}
    assert me not in threads
    procs = set(parallel(where, range(8), n_workers=2, chunksize=1))
    assert os.getpid() not in {pid for pid, _ in procs}


def test_default_workers_and_never_more_than_items():
    shutdown()
    assert 1 <= num_cpus() <= (os.cpu_count() or 1)
    assert fastparallel.num_cpus is num_cpus
    parallel(pid_of, [1, 2], n_workers=8)
    assert len(multiprocessing.active_children()) <= 2
    shutdown()
    pids = set(parallel(sleep_then, [0.2] * (2 * num_cpus()), chunksize=1))
    assert len(pids) <= num_cpus()
    shutdown()
    # A generator has no len(): it is read ahead before any worker starts.
    parallel(pid_of, (i for i in range(1)), n_workers=8)
    assert len(multiprocessing.active_children()) <= 1
    shutdown()


# -- chunking -----------------------------------------------------------------------------
def _chunk_count(items, **kw) -> int:
    calls = []
    parallel(square, items, progress=lambda done, total: calls.append(done), **kw)
    return len(calls)


@pytest.mark.parametrize("threadpool", [False, True])
def test_tiny_items_are_chunked(threadpool):
    assert _chunk_count(range(20_000), threadpool=threadpool, n_workers=2) < 100
    assert _chunk_count((i for i in range(20_000)), threadpool=threadpool, n_workers=2) < 200


def test_long_uneven_items_stay_balanced():
    calls = []
    items = [0.3, 0.05, 0.05, 0.05, 0.3, 0.05, 0.05, 0.05]
    parallel(sleep_then, items, n_workers=2, progress=lambda d, t: calls.append(d))
    assert len(calls) == len(items)  # one item per chunk


def test_chunk_sizer_adapts():
    sizer = ChunkSizer(None, 1_000_000, n_workers=2)
    assert sizer.next_size() == 1
    sizer.record(10, 10e-6)
    assert sizer.next_size() > 1000
    sizer = ChunkSizer(None, 16, n_workers=2)
    sizer.record(1, 1e-6)
    assert sizer.next_size() == 2  # 16 / (4 * 2): long lists of fast items still spread out
    slow = ChunkSizer(None, None, n_workers=2)
    slow.record(1, 0.5)
    assert slow.next_size() == 1
    assert ChunkSizer(7, None, 2).next_size() == 7
    big = ChunkSizer(None, None, n_workers=2)
    big.record(4, 4e-4, nbytes=16 << 20)  # fast items with 4 MB results each
    assert big.next_size() == 1  # large results stream back one at a time


def test_explicit_chunksize(backend):
    calls = []
    parallel(square, range(100), chunksize=10, progress=lambda d, t: calls.append(d), **backend)
    assert calls[-1] == 100 and len(calls) == 10


# -- lazy input, generators -------------------------------------------------------------
class Counted:
    def __init__(self, n=None):
        self.pulled = 0
        self.n = n

    def __iter__(self):
        for i in itertools.count() if self.n is None else range(self.n):
            self.pulled += 1
            yield i


def test_input_is_read_lazily_in_list_mode():
    source = Counted(2000)
    seen = []
    parallel(lambda x: seen.append(source.pulled) or x, source, threadpool=True, n_workers=2)
    assert seen[0] < 2000


@pytest.mark.parametrize("kind", ["threads", "processes"])
def test_generator_on_infinite_input(kind):
    source = Counted()
    out = parallel(square, source, return_as="generator", **BACKENDS[kind])
    first = list(itertools.islice(out, 50))
    assert first == [x * x for x in range(50)]
    assert source.pulled - 50 < 250_000  # bounded read-ahead: a few chunks per worker
    for _ in itertools.islice(out, 300_000):
        pass
    assert source.pulled - 300_050 < 250_000  # ... and it does not grow as the stream goes on
    pulled = source.pulled
    out.close()
    assert source.pulled == pulled  # closing stops reading


def test_generator_unordered_yields_in_completion_order():
    out = list(
        parallel(
            sleep_then,
            [0.5, 0.0, 0.0, 0.0],
            threadpool=True,
            n_workers=4,
            return_as="generator_unordered",
        )
    )
    assert sorted(out) == [0.0, 0.0, 0.0, 0.5]
    assert out[-1] == 0.5


def test_generators_are_lazy_and_validate_eagerly(tmp_path):
    with pytest.raises(ValueError):
        parallel(square, [1], chunksize=0, return_as="generator")
    log = tmp_path / "starts"
    gen = parallel(record_start, range(5), log, return_as="generator", threadpool=True)
    time.sleep(0.05)
    assert not log.exists()
    assert list(gen) == list(range(5))


def test_closing_a_process_generator_stops_the_work(tmp_path):
    log = tmp_path / "starts"
    gen = parallel(
        record_start,
        (0.0 if i < 3 else 30.0 for i in range(100)),
        log,
        return_as="generator",
        n_workers=2,
        chunksize=1,
    )
    assert next(gen) == 0.0
    t0 = time.monotonic()
    gen.close()
    assert time.monotonic() - t0 < 5
    n = len(log.read_text().splitlines())
    assert n < 100


# -- progress ------------------------------------------------------------------------------
def test_progress_callback_from_calling_thread(backend):
    seen = []
    me = threading.get_ident()
    parallel(
        square,
        range(300),
        progress=lambda d, t: seen.append((d, t, threading.get_ident())),
        **backend,
    )
    assert seen[-1][:2] == (300, 300)
    assert {tid for *_, tid in seen} == {me}
    assert [d for d, *_ in seen] == sorted(d for d, *_ in seen)


def test_progress_total_unknown_then_given():
    seen = []
    parallel(square, (i for i in range(10)), threadpool=True, progress=lambda d, t: seen.append(t))
    assert set(seen) == {None}
    seen.clear()
    parallel(
        square,
        (i for i in range(10)),
        threadpool=True,
        total=10,
        progress=lambda d, t: seen.append(t),
    )
    assert set(seen) == {10}


def test_progress_in_a_log_is_a_few_plain_lines(capfd, backend):
    parallel(square, range(2000), progress=True, **backend)
    out, err = capfd.readouterr()
    assert "\r" not in out + err
    lines = err.strip().splitlines()
    assert 1 <= len(lines) <= 5
    assert "2000/2000" in lines[-1]


def test_no_progress_prints_nothing(capfd, backend):
    parallel(square, range(100), progress=False, **backend)
    parallel(square, range(100), **backend)
    out, err = capfd.readouterr()
    assert out == "" and err == ""


def test_terminal_bar_uses_fastprogress(capsys, monkeypatch):
    from fastparallel.core import progress as progress_module

    monkeypatch.setattr(progress_module, "_stdout_is_terminal", lambda: True)
    parallel(square, range(500), progress=True, threadpool=True)
    out = capsys.readouterr().out
    assert "100.00%" in out and "[500/500" in out


def test_fastprogress_imported_only_for_a_bar():
    proc = run_script("""
        import sys
        from fastparallel import parallel
        parallel(abs, range(10), threadpool=True, progress=False)
        parallel(abs, range(10), threadpool=True, progress=True)   # not a terminal: plain lines
        print('fastprogress' in sys.modules)
    """)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "False"


# -- serialization -------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["forkserver", "spawn", "fork"])
def test_lambdas_and_closures_on_every_start_method(method):
    offset = 10

    def add(x):
        return x + offset

    assert parallel(add, range(5), method=method, n_workers=2) == [10, 11, 12, 13, 14]
    assert parallel(lambda x: -x, range(3), method=method, n_workers=2) == [0, -1, -2]


@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_notebook_style_code_from_python_c(method):
    proc = run_script(f"""
        from fastparallel import parallel
        class Point:
            def __init__(self, x): self.x = x
            def norm(self): return abs(self.x)
        scale = 3
        def f(p): return Point(p.norm() * scale)
        out = parallel(f, [Point(-1), Point(2)], method={method!r}, n_workers=2)
        print([type(p).__name__ for p in out], [p.x for p in out])
        print(parallel(lambda x: x ** 2, range(4), method={method!r}))
    """)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split("\n")[:2] == ["['Point', 'Point'] [3, 6]", "[0, 1, 4, 9]"]


def test_arguments_are_sent_once_per_worker_not_per_chunk(tmp_path):
    path = tmp_path / "unpickles"
    big = CountsUnpickling(str(path), size=1_000_000)
    CountsUnpickling.pickled = 0
    out = parallel(uses_big, range(400), big=big, n_workers=2, chunksize=1)
    assert out == [x + 1_000_000 for x in range(400)]
    assert CountsUnpickling.pickled == 1  # serialized once per call
    assert len(path.read_text().splitlines()) <= 2  # deserialized once per worker
    # The same arguments in the next call are not sent again at all.
    parallel(uses_big, range(400), big=big, n_workers=2, chunksize=1)
    assert len(path.read_text().splitlines()) <= 2


def test_items_use_plain_pickle_when_they_can():
    from fastparallel.serialize.pickling import dumps

    data = [1, "a", (2.0, None)]
    assert dumps(data) == pickle.dumps(data, protocol=pickle.HIGHEST_PROTOCOL)
    assert pickle.loads(dumps(lambda: 5))() == 5


# -- start methods and pools -----------------------------------------------------------------
@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver", None])
def test_start_methods(method):
    assert parallel(square, range(10), method=method, n_workers=2) == [x * x for x in range(10)]


def test_context_object_as_method():
    ctx = multiprocessing.get_context("spawn")
    assert parallel(square, range(4), method=ctx, n_workers=1) == [0, 1, 4, 9]


def test_default_start_method_is_safe_and_global_state_untouched():
    from fastparallel.backends.processes.launch import make_launcher

    # Linux: fork the caller when safe, else the template (test_fork.py); macOS: the template.
    expected = "spawn"
    if hasattr(os, "fork"):
        expected = "default" if sys.platform.startswith("linux") else "template"
    assert make_launcher(None)[1] == expected
    proc = run_script("""
        import multiprocessing as mp, threading, sys
        import fastparallel
        assert mp.get_start_method(allow_none=True) is None, 'set at import'
        assert threading.active_count() == 1, 'thread at import'
        from fastparallel import parallel
        ev = threading.Event(); t = threading.Thread(target=ev.wait); t.start()   # a busy parent
        print(parallel(abs, [-1, -2]))
        ev.set(); t.join()
        print(mp.get_start_method(allow_none=True))
    """)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["[1,", "2]", "None"]
    assert "DeprecationWarning" not in proc.stderr


def test_warm_pool_is_reused_and_can_be_shut_down():
    shutdown()
    first = set(parallel(pid_of, range(8), n_workers=2, chunksize=1))
    second = set(parallel(pid_of, range(8), n_workers=2, chunksize=1))
    assert second <= first
    shutdown()
    third = set(parallel(pid_of, range(8), n_workers=2, chunksize=1))
    assert not third & first


def test_fork_pools_are_fresh_per_call():
    first = set(parallel(pid_of, range(4), n_workers=2, method="fork", chunksize=1))
    second = set(parallel(pid_of, range(4), n_workers=2, method="fork", chunksize=1))
    assert not first & second


def test_pools_shut_down_at_interpreter_exit():
    proc = run_script("""
        from fastparallel import parallel
        import os
        def pid(_): return os.getpid()
        print(*set(parallel(pid, range(4), n_workers=2, chunksize=1)))
    """)
    assert proc.returncode == 0, proc.stderr
    pids = [int(p) for p in proc.stdout.split()]
    assert pids
    deadline = time.monotonic() + 10
    alive = pids
    while alive and time.monotonic() < deadline:
        alive = [p for p in alive if Path(f"/proc/{p}").exists() and "Z" not in _state(p)]
        time.sleep(0.05)
    assert not alive


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[1].split()[0]
    except OSError:
        return "gone"


# -- pause, initializer, max_tasks_per_child, timeout ----------------------------------------
def slow_start():
    time.sleep(0.3)  # workers that are not ready when the first items are released


async def record_start_async(path, x):
    return record_start(path, x)


PAUSE_CASES = {
    "serial": {"n_workers": 0},
    "threads": {"threadpool": True},
    "threads, chunksize=3": {"threadpool": True, "chunksize": 3},
    "threads, slow initializer": {"threadpool": True, "initializer": slow_start},
    "processes, cold": {"cold": True},
    "processes, warm": {},
    "processes, chunksize=3": {"chunksize": 3},
    "processes, slow initializer": {"initializer": slow_start},
    "coroutines": {"fn": record_start_async},
}


@pytest.fixture
def reported_starts(monkeypatch):
    """The start of each item as its worker reported it to the dispatcher (item -> time).

    pause's clock: the dispatcher releases an item only ``pause`` after the previous
    one reported its start. A reading taken inside ``fn`` comes a little later, and on a
    busy machine its delay differs from item to item, so two such readings can be closer
    than ``pause`` although the library spaced the items as it says.
    """
    starts = {}
    handle = Dispatcher._handle

    def recording(self, outcome):
        if isinstance(outcome, Started):
            starts[outcome.chunk.start] = outcome.time
        return handle(self, outcome)

    monkeypatch.setattr(Dispatcher, "_handle", recording)
    return starts


@pytest.mark.parametrize("case", list(PAUSE_CASES))
def test_pause_spaces_the_starts_of_any_two_items(tmp_path, case, reported_starts):
    kw = {"n_workers": 3, **PAUSE_CASES[case]}
    fn = kw.pop("fn", record_start)
    if kw.pop("cold", False) or "initializer" in kw:
        shutdown()  # workers start (and run the initializer) while the first items wait for them
    else:
        parallel(square, range(5), **kw)  # warm
    reported_starts.clear()
    log = tmp_path / "starts"
    pause = 0.15
    assert parallel(fn, range(5), log, pause=pause, **kw) == list(range(5))
    in_fn = {int(x): float(t) for x, t in (line.split() for line in log.read_text().splitlines())}
    assert sorted(reported_starts) == sorted(in_fn) == list(range(5))
    order = sorted(reported_starts, key=reported_starts.get)
    for before, after in itertools.pairwise(order):
        # The library's promise, on its clock, and so the next item's fn began no sooner
        # than pause after the previous item was handed to its fn.
        assert reported_starts[after] >= reported_starts[before] + pause, reported_starts
        assert in_fn[after] >= reported_starts[before] + pause, (in_fn, reported_starts)
    for item, reported in reported_starts.items():
        assert in_fn[item] >= reported  # reported right before fn is called
    span = reported_starts[order[-1]] - reported_starts[order[0]]
    assert span < 4 * pause + 5  # generous: the pauses and some slack


@pytest.mark.parametrize("threadpool", [False, True])
def test_initializer_runs_once_per_worker(tmp_path, threadpool):
    shutdown()
    log = tmp_path / "init"
    parallel(
        square,
        range(200),
        initializer=init_writer,
        initargs=(str(log),),
        n_workers=2,
        threadpool=threadpool,
        chunksize=1,
    )
    lines = log.read_text().splitlines()
    assert 1 <= len(lines) <= 2
    assert len(set(lines)) == len(lines)


def test_timeout_serially_fails_once_the_running_item_returns():
    t0 = time.monotonic()
    with pytest.raises(
        ParallelTimeoutError, match=r"3 of 4 items finished"
    ):  # item 2 ends past the deadline
        parallel(sleep_then, [0.0, 0.3, 0.3, 5.0], timeout=0.5, chunksize=1, n_workers=0)
    assert time.monotonic() - t0 < 2.0  # the 5 s item never starts


# -- errors --------------------------------------------------------------------------------
def test_error_keeps_type_traceback_and_names_item(backend):
    with pytest.raises(KeyError) as info:
        parallel(fail_on_three, range(10), **backend)
    exc = info.value
    notes = " ".join(getattr(exc, "__notes__", []))
    assert "item 3 (3)" in notes
    tb = "".join(__import__("traceback").format_exception(exc))
    assert "fail_on_three" in tb


def test_return_exceptions_fills_the_slot(backend):
    out = parallel(fail_on_three, range(6), return_exceptions=True, **backend)
    assert out[:3] == [0, 1, 2] and out[4:] == [4, 5]
    assert isinstance(out[3], KeyError)
    kept = out[3].__traceback__ is not None or isinstance(out[3].__cause__, _RemoteTraceback)
    assert kept


@pytest.mark.parametrize(
    "kwargs, error",
    [
        ({"n_workers": -1}, ValueError),
        ({"n_workers": 1.5}, TypeError),
        ({"n_workers": True}, TypeError),
        ({"chunksize": 0}, ValueError),
        ({"chunksize": "3"}, TypeError),
        ({"method": "teleport"}, ValueError),
        ({"method": 3}, TypeError),
        ({"threadpool": "yes"}, TypeError),
        ({"return_as": "dict"}, ValueError),
        ({"timeout": -1}, ValueError),
        ({"timeout": "1"}, TypeError),
        ({"pause": -1}, ValueError),
        ({"max_tasks_per_child": 0}, ValueError),
        ({"max_tasks_per_child": 2, "threadpool": True}, ValueError),
        ({"method": "spawn", "threadpool": True}, ValueError),
        ({"initializer": 5}, TypeError),
        ({"progress": 5}, TypeError),
        ({"total": -2}, ValueError),
        ({"return_exceptions": 1}, TypeError),
        ({"item_timeout": 0}, ValueError),
        ({"item_timeout": -1}, ValueError),
        ({"item_timeout": "5"}, TypeError),
        ({"retries": -1}, ValueError),
        ({"retries": 1.5}, TypeError),
        ({"retry_on": "ValueError"}, TypeError),
        ({"retry_on": (ValueError, 3)}, TypeError),
        ({"retry_on": ()}, TypeError),
        ({"retry_delay": -0.1}, ValueError),
        ({"retry_delay": None}, TypeError),
    ],
)
def test_bad_arguments_fail_before_any_worker_starts(kwargs, error):
    shutdown()
    called = []
    with pytest.raises(error) as info:
        parallel(lambda x: called.append(x), range(3), **kwargs)
    assert next(iter(kwargs)) in str(info.value)  # the message names the argument
    assert not getattr(info.value, "__notes__", None)  # raised by the checks, not by fn in a worker
    assert not called
    assert multiprocessing.active_children() == []


@pytest.mark.parametrize(
    "kwargs",
    [{"initializer": print}, {"method": "spawn"}, {"max_tasks_per_child": 2}, {"item_timeout": 5}],
)
def test_options_an_executor_cannot_honour_are_refused(kwargs):
    from concurrent.futures import ThreadPoolExecutor

    ran = []
    match = f"{next(iter(kwargs))} cannot be used with executor="
    with ThreadPoolExecutor(1) as executor, pytest.raises(ValueError, match=match):
        parallel(ran.append, [1], executor=executor, **kwargs)
    assert not ran


def test_bad_fn_and_items():
    with pytest.raises(TypeError, match="fn must be callable"):
        parallel(3, [1])
    with pytest.raises(TypeError, match="items must be iterable"):
        parallel(abs, 5)


def test_empty_input_starts_nothing(backend):
    shutdown()
    before = {pid for pid, _ in faults_helpers.descendants(os.getpid())}
    threads = set(threading.enumerate())
    assert parallel(square, [], **backend) == []
    assert parallel(square, iter(()), **backend) == []
    assert list(parallel(square, [], return_as="generator", **backend)) == []
    # No process started (checked by pid, not by time: a busy machine makes any call slow),
    # and no thread left running.
    assert {pid for pid, _ in faults_helpers.descendants(os.getpid())} <= before
    assert set(threading.enumerate()) <= threads
    assert multiprocessing.active_children() == []


# -- nesting and threads ------------------------------------------------------------------------
def test_nested_process_calls_do_not_multiply():
    out = parallel(nested, [3, 4], n_workers=2, chunksize=1)
    assert [total for total, _ in out] == [5, 14]
    # Each of the 2 outer workers may use num_cpus() // 2 inner workers, not num_cpus().
    assert all(children <= max(1, num_cpus() // 2) for _, children in out)
    assert parallel(nested, [3], threadpool=True)[0][0] == 5


def test_calls_from_other_threads():
    results = {}

    def run(i):
        results[i] = parallel(square, range(50), threadpool=i % 2 == 0, n_workers=2)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert all(results[i] == [x * x for x in range(50)] for i in range(4))


def test_exit_does_not_wait_for_warm_workers():
    # Thread pool first, process pool second: multiprocessing's own exit hook is then
    # registered after ours and would join our (non-daemon) workers forever.
    t0 = time.monotonic()
    proc = run_script(
        """
        from fastparallel import parallel
        def sq(x): return x * x
        print(parallel(sq, range(4), threadpool=True), parallel(sq, range(4), n_workers=2))
    """,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[0, 1, 4, 9] [0, 1, 4, 9]"
    assert time.monotonic() - t0 < 30
