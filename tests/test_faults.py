"""Fault tolerance: dead workers, exceptions that cannot cross the process boundary,
SystemExit/KeyboardInterrupt from fn, fail-fast, Ctrl-C, timeouts, a dead parent, a
broken input iterable, threads, nesting, leaks and interpreter shutdown.

Synchronisation is by handshake files (see faults_helpers), never by sleeping. Time
bounds are generous (``PROMPT`` seconds where the spec says "promptly" or "within a
second"); the measured times are recorded with ``record_timing`` (set the environment
variable FASTPARALLEL_FAULT_TIMINGS to a file to collect them).

The ``scenario_*`` functions are reused by tests/test_stress.py.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sys
import threading
import time
from collections import Counter
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.integration

if str(Path(__file__).resolve().parent) not in sys.path:  # workers import faults_helpers by name
    sys.path.insert(0, str(Path(__file__).resolve().parent))

import faults_helpers as h
from faults_helpers import PROMPT, record_timing, wait_for

import fastparallel
from fastparallel import ParallelTimeoutError, RemoteError, TaskExitError, WorkerDiedError, parallel
from fastparallel.backends.processes.wire.remote_errors import _RemoteTraceback

NW = 2  # workers per call: the machine has 2 cores
BACKENDS = ["processes", "threads"]
SQUARES = [x * x for x in range(100)]


@pytest.fixture
def marks(tmp_path: Path) -> Path:
    path = tmp_path / "marks"
    path.mkdir()
    return path


@pytest.fixture
def release() -> Any:
    """An event that blocked worker threads wait on; set when the test ends."""
    event = threading.Event()
    yield event
    event.set()


def _threadpool(backend: str) -> bool:
    return backend == "threads"


def _block_kwargs(backend: str, event: threading.Event) -> dict[str, Any]:
    """Threads block on an event (released by the test); processes sleep (and get killed)."""
    return {"event": event} if backend == "threads" else {}


def _catch(fn: Any, *args: Any, **kwargs: Any) -> tuple[Any, BaseException | None]:
    """Call and return ``(result, exception)``; also catches BaseException (KeyboardInterrupt,
    SystemExit), so that a library that lets one through fails the test, not the session."""
    try:
        return fn(*args, **kwargs), None
    except BaseException as exc:
        return None, exc


def _notes(exc: BaseException) -> str:
    return "\n".join(getattr(exc, "__notes__", []))


def _assert_pool_works(backend: str = "processes") -> None:
    assert (
        parallel(h.square, range(10), n_workers=NW, threadpool=_threadpool(backend)) == SQUARES[:10]
    )


# =====================================================================================
# A worker dies


CRASHES = {
    # how: (exit code, words the message must contain)
    "exit": (7, ["exited with code 7"]),
    "sigkill": (-signal.SIGKILL, ["SIGKILL", "out of memory"]),
    "segfault": (-signal.SIGSEGV, ["SIGSEGV"]),
}


def scenario_crash(how: str, tmp_path: Path, chunksize: int | None = None) -> float:
    """A worker dies on item 5 of 12; returns the seconds from its death to the error."""
    exitcode, words = CRASHES[how]
    target = 5
    items = list(range(12))
    stamp = tmp_path / f"crash-stamp-{how}-{chunksize}"
    stamp.unlink(missing_ok=True)

    _, err = _catch(
        parallel,
        h.crash_on,
        items,
        n_workers=NW,
        chunksize=chunksize,
        target=target,
        how=how,
        stamp=str(stamp),
    )
    caught = time.time()
    assert isinstance(err, WorkerDiedError), repr(err)
    assert isinstance(err, BrokenProcessPool)
    delay = caught - float(stamp.read_text())
    message = str(err)
    assert "item 5 (5)" in message, message
    for word in words:
        assert word in message, message
    assert err.indices == (target,)
    assert err.exitcode == exitcode
    assert delay < PROMPT, f"the error came {delay:.2f}s after the worker died"

    # return_exceptions: only the crashed item gets the error; nothing is lost.
    out = parallel(
        h.crash_on,
        items,
        n_workers=NW,
        chunksize=chunksize,
        return_exceptions=True,
        target=target,
        how=how,
    )
    assert len(out) == len(items)
    assert isinstance(out[target], WorkerDiedError), out
    assert out[target].indices == (target,)
    assert "item 5 (5)" in str(out[target])
    assert out[:target] + out[target + 1 :] == [x * x for x in items if x != target], out

    # The pool was repaired: the next call works.
    _assert_pool_works()
    return delay


@pytest.mark.parametrize("chunksize", [None, 4])
@pytest.mark.parametrize("how", list(CRASHES))
def test_worker_death(how: str, chunksize: int | None, tmp_path: Path) -> None:
    delay = scenario_crash(how, tmp_path, chunksize)
    record_timing(f"crash:{how}" + (f":chunksize={chunksize}" if chunksize else ""), delay)


def test_crash_error_names_the_item_by_index_and_repr() -> None:
    _, err = _catch(parallel, h.crash_on, ["a", "b", "c"], n_workers=1, target="b", how="exit")
    assert isinstance(err, WorkerDiedError), repr(err)
    assert "item 1 ('b')" in str(err)
    assert err.indices == (1,)


@pytest.mark.timeout(60)
def test_crash_before_any_item_of_the_chunk_started_blames_that_chunk() -> None:
    """The worker dies while unpickling a chunk (item 2 ends the process when loaded), so no
    item of the chunk ran yet. The error must name the chunk's items (or item 2), not an item
    of an earlier chunk or call that the worker's progress marker still points at."""
    assert (
        parallel(h.square, range(4), n_workers=1, chunksize=4) == SQUARES[:4]
    )  # leaves the marker at 3
    items: list[Any] = [0, 1, h.ExitsOnLoad(), 3]
    _, err = _catch(parallel, h.type_name, items, n_workers=1, chunksize=4)
    assert isinstance(err, WorkerDiedError), repr(err)
    assert err.exitcode == 3
    assert 2 in err.indices, (err.indices, str(err))
    assert set(err.indices) <= {0, 1, 2, 3}
    assert "item 2 (" in str(err) or "items 0-3" in str(err), str(err)

    out = parallel(h.type_name, items, n_workers=1, chunksize=4, return_exceptions=True)
    assert isinstance(out[2], WorkerDiedError)
    assert [out[0], out[1], out[3]] == ["int"] * 3
    _assert_pool_works()


def _receive_fails_on_chunks(inbound: Any) -> Any:
    """A worker's receive that fails, as importing ctypes to map the first shared memory
    did once in CI (``ModuleNotFoundError: No module named '_ctypes'``)."""
    from fastparallel.backends.processes import worker

    frame, buffers = _real_receive(inbound)
    if worker.decode(frame)[0] == worker.Kind.CHUNK:
        raise ModuleNotFoundError("No module named '_ctypes'")
    return frame, buffers


_real_receive: Any = None


@pytest.mark.timeout(60)
def test_a_worker_whose_reader_fails_ends_and_fails_its_chunk(
    monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    # Its reader thread died and the worker waited for chunks forever: so did the caller.
    global _real_receive
    from fastparallel.backends.processes import worker

    fastparallel.shutdown()  # workers forked from now on have the failing receive
    _real_receive = worker._receive
    monkeypatch.setattr(worker, "_receive", _receive_fails_on_chunks)
    try:
        _, err = _catch(parallel, h.square, range(4), n_workers=1, method="fork")
    finally:
        fastparallel.shutdown()
    assert isinstance(err, WorkerDiedError), repr(err)
    assert err.exitcode == 1, str(err)
    assert "No module named '_ctypes'" in capfd.readouterr().err
    monkeypatch.undo()
    _assert_pool_works()


def test_segfault_leaves_python_traceback_on_stderr(tmp_path: Path) -> None:
    body = """
    if __name__ == "__main__":
        try:
            parallel(h.crash_on, range(6), n_workers=2, target=3, how="segfault")
        except fastparallel.WorkerDiedError as e:
            dump("result.json", {"message": str(e), "exitcode": e.exitcode, "indices": list(e.indices)})
    """
    proc = h.run_script(tmp_path, body, timeout=60)
    assert proc.returncode == 0, proc.stderr
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["exitcode"] == -signal.SIGSEGV
    assert result["indices"] == [3]
    assert "SIGSEGV" in result["message"]
    assert "Fatal Python error: Segmentation fault" in proc.stderr
    # faulthandler prints the worker's Python stack, down to the crashing fn.
    assert re.search(r'File ".*faults_helpers\.py", line \d+ in crash_on', proc.stderr), proc.stderr


# =====================================================================================
# Exceptions and values that cannot cross the process boundary


UNPICKLABLE_EXCEPTIONS = {
    # kind: (expected class, text the message must contain)
    "mismatched": (h.MismatchedInit, "mismatched init 3 b"),
    "lock": (h.WithLock, "lock failure on 3"),
    "socket": (h.WithSocket, "socket failure on 3"),
    "local": (RemoteError, "local failure on 3"),
}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", list(UNPICKLABLE_EXCEPTIONS))
def test_exception_that_cannot_be_pickled(kind: str) -> None:
    cls, text = UNPICKLABLE_EXCEPTIONS[kind]
    _, err = _catch(parallel, h.raise_on, range(8), n_workers=NW, target=3, kind=kind)
    assert type(err) is cls, repr(err)
    assert text in str(err)
    if kind == "mismatched":
        assert (err.a, err.b) == (3, "b")  # the state came along
    if kind == "local":
        assert "LocalError" in str(err)
        assert "LocalError" in err.type_name
    # The worker's traceback, as __cause__.
    assert isinstance(err.__cause__, _RemoteTraceback)
    tb = str(err.__cause__)
    assert "faults_helpers.py" in tb and "raise_on" in tb, tb
    # The item's index, in a note.
    assert "item 3 (3)" in _notes(err), _notes(err)

    # Other items are unaffected; the pool is not broken.
    out = parallel(h.raise_on, range(8), n_workers=NW, target=3, kind=kind, return_exceptions=True)
    assert type(out[3]) is cls
    assert "item 3 (3)" in _notes(out[3])
    assert out[:3] + out[4:] == [x * x for x in range(8) if x != 3]
    _assert_pool_works()


@pytest.mark.timeout(60)
def test_unpicklable_result() -> None:
    _, err = _catch(parallel, h.lock_result_on, range(8), n_workers=NW, target=3)
    assert isinstance(err, TypeError), repr(err)  # pickle's own error, original type
    assert "pickle" in str(err)
    assert "item 3 (3)" in _notes(err)
    assert "threadpool=True" in str(err) + _notes(err)
    assert isinstance(err.__cause__, _RemoteTraceback)
    assert "faults_helpers" in str(err.__cause__) or "pickle" in str(err.__cause__)

    out = parallel(h.lock_result_on, range(8), n_workers=NW, target=3, return_exceptions=True)
    assert isinstance(out[3], TypeError)
    assert "item 3 (3)" in _notes(out[3]) and "threadpool=True" in _notes(out[3])
    assert out[:3] + out[4:] == [x * x for x in range(8) if x != 3]
    _assert_pool_works()
    # And the suggestion is right: on threads the result comes back.
    out = parallel(h.lock_result_on, range(8), n_workers=NW, target=3, threadpool=True)
    assert type(out[3]) is type(threading.Lock())


@pytest.mark.timeout(60)
def test_unpicklable_input_item() -> None:
    items: list[Any] = [0, 1, 2, threading.Lock(), 4, 5, 6, 7]
    _, err = _catch(parallel, h.type_name, items, n_workers=NW)
    assert isinstance(err, TypeError), repr(err)
    assert "pickle" in str(err)
    assert "item 3 (" in _notes(err), _notes(err)

    out = parallel(h.type_name, items, n_workers=NW, return_exceptions=True)
    assert isinstance(out[3], TypeError)
    assert "item 3 (" in _notes(out[3])
    assert out[:3] + out[4:] == ["int"] * 7
    _assert_pool_works()


@pytest.mark.timeout(60)
def test_input_item_that_cannot_be_unpickled_in_the_worker() -> None:
    """Item 5 pickles, but loading it in the worker raises: only item 5 fails, and the error
    names item 5 (chunks of 4: the chunk's other items must not be blamed or lost)."""
    items: list[Any] = [0, 1, 2, 3, 4, h.FailsToLoad(), 6, 7]
    _, err = _catch(parallel, h.type_name, items, n_workers=NW, chunksize=4)
    assert isinstance(err, ValueError), repr(err)
    assert "this object cannot be loaded" in str(err)
    assert "item 5 (" in _notes(err), _notes(err)

    out = parallel(h.type_name, items, n_workers=NW, chunksize=4, return_exceptions=True)
    assert isinstance(out[5], ValueError), out
    assert out[:5] + out[6:] == ["int"] * 7, out
    _assert_pool_works()


@pytest.mark.timeout(60)
def test_result_that_cannot_be_unpickled_in_the_caller() -> None:
    """Item 5's result pickles in the worker but cannot be loaded by the caller: only item 5
    fails, and the error names item 5 (not the first item of its chunk)."""
    _, err = _catch(parallel, h.unloadable_result_on, range(8), n_workers=NW, chunksize=4, target=5)
    assert isinstance(err, Exception), repr(err)
    assert "this object cannot be loaded" in str(err)
    assert "item 5 (5)" in str(err) + _notes(err), str(err) + _notes(err)
    assert "item 4 (4)" not in str(err) + _notes(err)

    out = parallel(
        h.unloadable_result_on,
        range(8),
        n_workers=NW,
        chunksize=4,
        target=5,
        return_exceptions=True,
    )
    assert isinstance(out[5], Exception), out
    assert out[:5] + out[6:] == [x * x for x in range(8) if x != 5], out
    _assert_pool_works()


# =====================================================================================
# SystemExit, KeyboardInterrupt and other BaseExceptions raised by fn


BASE_EXCEPTIONS = {"sysexit": SystemExit, "keyboard": KeyboardInterrupt, "base": h.CustomBase}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", list(BASE_EXCEPTIONS))
@pytest.mark.parametrize("backend", BACKENDS)
def test_base_exception_from_fn_is_wrapped(backend: str, kind: str) -> None:
    cause = BASE_EXCEPTIONS[kind]
    _, err = _catch(
        parallel,
        h.raise_on,
        range(6),
        n_workers=NW,
        threadpool=_threadpool(backend),
        target=2,
        kind=kind,
    )
    assert type(err) is TaskExitError, repr(err)
    assert "item 2 (2)" in str(err)
    assert cause.__name__ in str(err)
    assert isinstance(err.__cause__, cause)

    out, err = _catch(
        parallel,
        h.raise_on,
        range(6),
        n_workers=NW,
        threadpool=_threadpool(backend),
        target=2,
        kind=kind,
        return_exceptions=True,
    )
    assert err is None, repr(err)
    assert type(out[2]) is TaskExitError
    assert out[:2] + out[3:] == [x * x for x in range(6) if x != 2]
    _assert_pool_works(backend)


@pytest.mark.parametrize("kind", ["sysexit", "base"])
def test_serial_wraps_system_exit(kind: str) -> None:
    _, err = _catch(parallel, h.raise_on, range(4), n_workers=0, target=2, kind=kind)
    assert type(err) is TaskExitError, repr(err)
    assert "item 2 (2)" in str(err)
    assert isinstance(err.__cause__, BASE_EXCEPTIONS[kind])


def test_serial_lets_keyboard_interrupt_through() -> None:
    _, err = _catch(parallel, h.raise_on, range(4), n_workers=0, target=2, kind="keyboard")
    assert type(err) is KeyboardInterrupt, repr(err)
    _, err = _catch(
        parallel,
        h.raise_on,
        range(4),
        n_workers=0,
        target=2,
        kind="keyboard",
        return_exceptions=True,
    )
    assert type(err) is KeyboardInterrupt, repr(err)


# =====================================================================================
# Fail fast


def scenario_fail_fast(backend: str, marks: Path, release: threading.Event) -> float:
    """Item 0 fails once item 1 runs (and blocks for 30 s); returns seconds to the error."""
    stamp = marks.parent / "fail-stamp"
    began = time.monotonic()
    _, err = _catch(
        parallel,
        h.mark_then_block,
        range(6),
        n_workers=NW,
        threadpool=_threadpool(backend),
        marks=str(marks),
        fail=(0,),
        fail_when_running=2,
        stamp=str(stamp),
        **_block_kwargs(backend, release),
    )
    caught = time.time()
    assert isinstance(err, ValueError), repr(err)
    assert "item 0 (0)" in _notes(err)
    delay = caught - float(stamp.read_text())
    assert delay < PROMPT, f"fail-fast took {delay:.2f}s"
    assert time.monotonic() - began < 25, "the call waited for the blocked items"
    running = h.read_marks(marks)
    assert "item-1" in running
    if backend == "processes":
        # Busy workers were stopped...
        h.wait_gone({m["pid"] for m in running.values()}, PROMPT, "busy workers")
    # ...and the next call works (on replacement workers).
    _assert_pool_works(backend)
    return delay


@pytest.mark.parametrize("backend", BACKENDS)
def test_fail_fast(backend: str, marks: Path, release: threading.Event) -> None:
    record_timing(f"fail-fast:{backend}", scenario_fail_fast(backend, marks, release))


@pytest.mark.parametrize("backend", BACKENDS)
def test_closing_a_generator_does_not_wait(
    backend: str, marks: Path, release: threading.Event
) -> None:
    gen = parallel(
        h.mark_then_block,
        range(6),
        n_workers=NW,
        threadpool=_threadpool(backend),
        return_as="generator",
        marks=str(marks),
        quick=(0,),
        **_block_kwargs(backend, release),
    )
    assert next(gen) == 0
    running = h.wait_marks(marks, 3)  # item 0 and two blocked items
    began = time.monotonic()
    gen.close()
    elapsed = time.monotonic() - began
    record_timing(f"generator-close:{backend}", elapsed)
    assert elapsed < PROMPT
    if backend == "processes":
        h.wait_gone({m["pid"] for m in running.values()}, PROMPT, "busy workers")
    _assert_pool_works(backend)


# =====================================================================================
# Ctrl-C


CTRL_C_SCRIPT = """
if __name__ == "__main__":
    threadpool = sys.argv[2] == "threads"
    marks = OUT / "marks"
    marks.mkdir()
    try:
        parallel(h.mark_then_block, range(4), n_workers=2, threadpool=threadpool,
                 marks=str(marks), seconds=60)
        dump("first.json", {"caught": None})
    except KeyboardInterrupt:
        caught = time.time()
        traceback.print_exc()
        dump("first.json", {"caught": caught})
    t = time.monotonic()
    second = parallel(h.pid_and_square, range(8), n_workers=2, threadpool=threadpool)
    dump("second.json", {"values": [v for _, v in second], "seconds": time.monotonic() - t})
"""


def scenario_ctrl_c(backend: str, tmp_path: Path) -> dict[str, float]:
    """SIGINT to the script's process group while items run; returns the measured times."""
    proc = h.start_script(tmp_path, CTRL_C_SCRIPT, args=[backend])
    try:
        running = h.wait_marks(tmp_path / "marks", 2, timeout=60)
        sent = time.time()
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(timeout=60)
        exited = time.time()
    finally:
        if proc.poll() is None:
            h.kill_session(proc.pid)
            proc.wait()
    stderr = (tmp_path / "stderr.txt").read_text()
    assert proc.returncode == 0, stderr
    first = json.loads((tmp_path / "first.json").read_text())
    assert first["caught"] is not None, "the call finished instead of raising KeyboardInterrupt"
    delay = first["caught"] - sent
    assert 0 <= delay < PROMPT, f"KeyboardInterrupt came {delay:.2f}s after SIGINT"
    # Exactly one traceback on stderr: the caller's KeyboardInterrupt (workers ignore SIGINT).
    assert stderr.count("Traceback (most recent call last)") == 1, stderr
    assert stderr.rstrip().splitlines()[-1].startswith("KeyboardInterrupt"), stderr
    assert "script.py" in stderr
    assert "leaked" not in stderr
    # The next call in the same script worked.
    second = json.loads((tmp_path / "second.json").read_text())
    assert second["values"] == SQUARES[:8]
    # Nothing of the script survives it: workers, forkserver, resource tracker.
    gone = h.wait_gone(
        {m["pid"] for m in running.values()}, PROMPT, "workers of the interrupted call"
    )
    wait_for(lambda: not h.session_pids(proc.pid), 10, "the script's processes to exit")
    return {"interrupt": delay, "exit": exited - sent, "workers_gone_after_exit": gone}


@pytest.mark.timeout(90)
@pytest.mark.parametrize("backend", BACKENDS)
def test_ctrl_c(backend: str, tmp_path: Path) -> None:
    times = scenario_ctrl_c(backend, tmp_path)
    record_timing(f"ctrl-c:{backend}", times["interrupt"])


# =====================================================================================
# Timeouts


TIMEOUT = 1.5


def scenario_timeout(backend: str, marks: Path, release: threading.Event) -> float:
    """Items 0, 1 finish, 2 and 3 block; returns how late after the deadline the error came."""
    threadpool = _threadpool(backend)
    _assert_pool_works(backend)  # warm: worker start-up is not part of the measure
    began = time.monotonic()
    _, err = _catch(
        parallel,
        h.mark_then_block,
        range(4),
        n_workers=NW,
        threadpool=threadpool,
        timeout=TIMEOUT,
        marks=str(marks),
        quick=(0, 1),
        **_block_kwargs(backend, release),
    )
    elapsed = time.monotonic() - began
    assert isinstance(err, ParallelTimeoutError), repr(err)
    assert isinstance(err, TimeoutError)
    assert re.search(r"\b2 of 4 items finished", str(err)), str(err)
    late = elapsed - TIMEOUT
    assert late > -0.01, f"raised {-late:.2f}s before the deadline"
    assert late < PROMPT, f"raised {late:.2f}s after the deadline"
    running = h.read_marks(marks)
    assert {"item-2", "item-3"} <= set(running), running
    if backend == "processes":  # workers busy with the late items are terminated
        h.wait_gone({m["pid"] for m in running.values()}, PROMPT, "workers busy with late items")
    _assert_pool_works(backend)
    return late


@pytest.mark.parametrize("backend", BACKENDS)
def test_timeout(backend: str, marks: Path, release: threading.Event) -> None:
    record_timing(f"timeout:{backend}", scenario_timeout(backend, marks, release))


# =====================================================================================
# The parent dies


PARENT_SCRIPT = """
if __name__ == "__main__":
    marks = OUT / "marks"
    marks.mkdir()
    if sys.argv[2] == "busy":
        parallel(h.mark_then_block, range(2), n_workers=2, marks=str(marks), seconds=120)
    elif sys.argv[2] == "nested":  # each worker runs a nested pool whose worker blocks
        parallel(h.nested_block, range(2), n_workers=2, marks=str(marks))
    else:
        parallel(h.mark_then_block, range(2), n_workers=2, marks=str(marks), quick=(0, 1))
        dump("idle.json", {})
        time.sleep(120)
"""


@pytest.mark.timeout(60)
@pytest.mark.parametrize("state", ["busy", "idle", "nested"])
def test_parent_killed(state: str, tmp_path: Path) -> None:
    proc = h.start_script(tmp_path, PARENT_SCRIPT, args=[state])
    try:
        running = h.wait_marks(tmp_path / "marks", 2, timeout=30)
        if state == "idle":
            wait_for(lambda: (tmp_path / "idle.json").exists(), 30, "the call to finish")
        workers = {m["pid"] for m in running.values()}
        assert all(h.pid_alive(p) for p in workers)
        family = {pid for pid, _ in h.descendants(proc.pid)}  # workers, forkserver, tracker
        assert workers <= family
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        gone = h.wait_gone(workers, 10, "workers of the killed parent")
        record_timing(f"parent-death:{state}", gone)
        h.wait_gone(family, 10, "processes started by the killed parent")
    finally:
        h.kill_session(proc.pid)
        proc.wait()


# =====================================================================================
# A broken input iterable


@pytest.mark.parametrize("return_exceptions", [False, True])
@pytest.mark.parametrize("backend", BACKENDS)
def test_input_iterable_error(
    backend: str, return_exceptions: bool, marks: Path, release: threading.Event
) -> None:
    stamp = marks.parent / "input-stamp"
    items = h.failing_input(2, str(marks), 2, str(stamp))  # raises once items 0 and 1 run
    _, err = _catch(
        parallel,
        h.mark_then_block,
        items,
        n_workers=NW,
        threadpool=_threadpool(backend),
        return_exceptions=return_exceptions,
        marks=str(marks),
        **_block_kwargs(backend, release),
    )
    caught = time.time()
    assert type(err) is LookupError, repr(err)
    assert str(err) == "the input iterable broke on purpose"
    notes = _notes(err)
    assert "input iterable" in notes, notes
    assert "raised by fn" not in notes
    delay = caught - float(stamp.read_text())
    record_timing(
        f"input-error:{backend}" + (":return_exceptions" if return_exceptions else ""), delay
    )
    assert delay < PROMPT
    if backend == "processes":  # pending work is cancelled
        h.wait_gone(h.marked_pids(marks), PROMPT, "workers of the cancelled call")
    _assert_pool_works(backend)


# =====================================================================================
# Threads calling parallel()


@pytest.mark.parametrize("backend", BACKENDS)
def test_call_from_a_non_main_thread(backend: str) -> None:
    result: list[Any] = []
    thread = threading.Thread(
        target=lambda: result.append(
            _catch(parallel, h.square, range(20), n_workers=NW, threadpool=_threadpool(backend))
        )
    )
    thread.start()
    thread.join(60)
    assert not thread.is_alive()
    assert result == [(SQUARES[:20], None)]


@pytest.mark.parametrize("backend", BACKENDS)
def test_concurrent_calls_from_threads(backend: str) -> None:
    n = 4
    barrier = threading.Barrier(n)
    results: dict[int, Any] = {}

    def call(i: int) -> None:
        barrier.wait(30)
        if i == 0 and backend == "processes":  # a crash in one call does not disturb the others
            results[i] = _catch(parallel, h.crash_on, range(10), n_workers=NW, target=4, how="exit")
        else:
            results[i] = _catch(
                parallel,
                h.square,
                range(10 * i, 10 * i + 30),
                n_workers=NW,
                threadpool=_threadpool(backend),
            )

    threads = [threading.Thread(target=call, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(90)
    assert not any(t.is_alive() for t in threads)
    for i in range(n):
        value, err = results[i]
        if i == 0 and backend == "processes":
            assert isinstance(err, WorkerDiedError) and err.indices == (4,), repr(err)
        else:
            assert err is None, repr(err)
            assert value == SQUARES[10 * i : 10 * i + 30]


# =====================================================================================
# Nested calls


def test_threads_inside_processes() -> None:
    assert parallel(h.nested_threads, [3, 4, 5], n_workers=NW) == [
        SQUARES[:3],
        SQUARES[:4],
        SQUARES[:5],
    ]


def _check_nested(out: list[dict[str, Any]], outer: int) -> None:
    expected_default = max(1, fastparallel.num_cpus() // outer)
    for r in out:
        assert r["values"] == SQUARES[:6]
        assert r["default"] == expected_default, (r, expected_default)
        assert 1 <= len(r["inner_pids"]) <= expected_default, r
        assert r["pid"] not in r["inner_pids"]


@pytest.mark.timeout(60)
def test_crash_inside_a_nested_pool() -> None:
    _, err = _catch(parallel, h.nested_crash, range(2), n_workers=NW)
    assert isinstance(err, WorkerDiedError), repr(err)
    assert err.indices == (2,) and "item 2 (2)" in str(err)
    assert re.search(r"raised by fn on item [01] ", _notes(err)), _notes(err)
    _assert_pool_works()


@pytest.mark.timeout(90)
def test_processes_inside_processes() -> None:
    fastparallel.shutdown()  # fresh workers
    out = parallel(h.nested_processes, range(NW), n_workers=NW)
    _check_nested(out, NW)


@pytest.mark.timeout(90)
def test_processes_inside_processes_on_a_warm_pool_grown_from_one_worker() -> None:
    """A pool first used with one item (one worker), then by a nested call on NW workers:
    every worker must know the pool's current size, or the first one nests num_cpus() workers."""
    fastparallel.shutdown()
    assert parallel(h.square, [3], n_workers=NW) == [9]  # one item: a pool of one worker
    out = parallel(h.nested_processes, range(NW), n_workers=NW)
    _check_nested(out, NW)


# =====================================================================================
# No leaks


LEAK_SCRIPT = """
import threading

def fds():
    return len(os.listdir("/proc/self/fd"))

def one(i):
    k = i % 8
    try:
        if k == 0:
            assert parallel(h.square, range(20), n_workers=2) == [x * x for x in range(20)]
        elif k == 1:
            parallel(h.raise_on, range(20), n_workers=2, target=7, kind="value")
        elif k == 2:
            parallel(h.crash_on, range(20), n_workers=2, target=3, how="exit")
        elif k == 3:
            parallel(h.crash_on, range(20), n_workers=2, target=3, how="sigkill", return_exceptions=True)
        elif k == 4:
            parallel(h.square, range(20), n_workers=2, threadpool=True)
        elif k == 5:
            parallel(h.raise_on, range(20), n_workers=2, target=3, kind="value", threadpool=True)
        elif k == 6:
            parallel(h.lock_result_on, range(20), n_workers=2, target=3)
        elif i % 40 == 7:
            parallel(time.sleep, [0, 0, 30, 30], n_workers=2, timeout=0.2)
        else:
            parallel(h.raise_on, range(20), n_workers=2, target=3, kind="sysexit")
    except (ValueError, TypeError, fastparallel.FastParallelError, TimeoutError):
        pass

def measure():
    assert parallel(h.square, range(20), n_workers=2) == [x * x for x in range(20)]
    # The warm thread pool's two idle threads are kept by design: have them both times.
    assert parallel(h.square, range(20), n_workers=2, threadpool=True) == [x * x for x in range(20)]
    family = h.descendants(os.getpid())
    return {"fds": fds(), "processes": sum(s != "Z" for _, s in family),
            "zombies": sum(s == "Z" for _, s in family), "threads": threading.active_count()}

if __name__ == "__main__":
    n = int(sys.argv[2])
    for i in range(40):
        one(i)
    before = measure()
    for i in range(40, n):
        one(i)
    after = measure()
    # Abandoned threads finish their item and end: wait (bounded) for them.
    deadline = time.monotonic() + 10
    while after != before and time.monotonic() < deadline:
        time.sleep(0.05)
        after = measure()
    dump("leaks.json", {"before": before, "after": after})
"""


@pytest.mark.timeout(120)
def test_no_leaks_after_hundreds_of_calls(tmp_path: Path) -> None:
    began = time.monotonic()
    proc = h.run_script(tmp_path, LEAK_SCRIPT, timeout=100, args=["200"])
    record_timing("leaks:200-calls-total", time.monotonic() - began)
    assert proc.returncode == 0, proc.stderr
    result = json.loads((tmp_path / "leaks.json").read_text())
    before, after = result["before"], result["after"]
    assert after["fds"] <= before["fds"], result
    assert after["processes"] <= before["processes"], result
    assert after["threads"] <= before["threads"], result
    assert after["zombies"] == 0, result
    assert "leaked" not in proc.stderr and "resource_tracker" not in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr


# =====================================================================================
# Interpreter shutdown


SHUTDOWN_SCRIPT = """
import atexit

def late(tag):
    def handler():
        for threadpool in (False, True):
            name = f"{tag}-{'threads' if threadpool else 'processes'}.json"
            t = time.monotonic()
            try:
                out = {"values": parallel(h.square, range(6), n_workers=2, threadpool=threadpool)}
            except Exception as e:
                out = {"error": type(e).__name__, "message": str(e)}
            out["seconds"] = time.monotonic() - t
            dump(name, out)
    return handler

if __name__ == "__main__":
    atexit.register(late("before"))
    if sys.argv[2] == "call-first":
        assert parallel(h.square, range(4), n_workers=2) == [0, 1, 4, 9]
        assert parallel(h.square, range(4), n_workers=2, threadpool=True) == [0, 1, 4, 9]
        atexit.register(late("after"))
"""


@pytest.mark.timeout(90)
@pytest.mark.parametrize("mode", ["call-first", "only-at-exit"])
def test_call_during_interpreter_shutdown(mode: str, tmp_path: Path) -> None:
    """atexit handlers registered before and after the first call (call-first), or a first
    call made only from an atexit handler (only-at-exit): serial or a clear error, no hang,
    no noise on stderr, no process left."""
    began = time.monotonic()
    proc = h.start_script(tmp_path, SHUTDOWN_SCRIPT, args=[mode])
    try:
        result = h.finish_script(proc, tmp_path, timeout=60)
        record_timing(f"atexit-script-total:{mode}", time.monotonic() - began)
        assert result.returncode == 0, result.stderr
        for tag in ("before", "after") if mode == "call-first" else ("before",):
            for backend in BACKENDS:
                path = tmp_path / f"{tag}-{backend}.json"
                assert path.exists(), (
                    f"the atexit handler registered {tag} the first call never finished"
                )
                out = json.loads(path.read_text())
                assert out["seconds"] < 30
                if "error" in out:  # a clear error is acceptable
                    assert out["message"] and (
                        "exit" in out["message"] or "shut" in out["message"]
                    ), out
                else:
                    assert out["values"] == SQUARES[:6], out
        assert "Traceback" not in result.stderr and "Exception ignored" not in result.stderr, (
            result.stderr
        )
        wait_for(lambda: not h.session_pids(proc.pid), 10, "the script's processes to exit")
    finally:
        h.kill_session(proc.pid)


EXIT_DURING_CALL_SCRIPT = """
import threading

if __name__ == "__main__":
    marks = OUT / "marks"
    marks.mkdir()
    if sys.argv[2] == "open-generator":
        gen = parallel(h.mark_then_block, range(4), n_workers=2, marks=str(marks), quick=(0,),
                       seconds=20, return_as="generator")
        assert next(gen) == 0
        h.wait_marks(marks, 3)
    else:
        threading.Thread(target=parallel, args=(h.mark_then_block, range(2)), daemon=True,
                         kwargs=dict(n_workers=2, marks=str(marks), seconds=20)).start()
        h.wait_marks(marks, 2)
    dump("leaving.json", {"time": time.time()})
"""


@pytest.mark.timeout(60)
@pytest.mark.parametrize("case", ["open-generator", "daemon-thread"])
def test_script_exits_while_a_call_is_in_progress(case: str, tmp_path: Path) -> None:
    """The script ends while its items still run (they would block 20 s): a generator left
    open, or a call in a daemon thread. Leaving never waits for that work: the script exits
    promptly, prints no traceback, and leaves no process behind."""
    proc = h.start_script(tmp_path, EXIT_DURING_CALL_SCRIPT, args=[case])
    try:
        result = h.finish_script(proc, tmp_path, timeout=12)
        exit_delay = time.time() - json.loads((tmp_path / "leaving.json").read_text())["time"]
        record_timing(f"exit-during-call:{case}", exit_delay)
        assert result.returncode == 0, result.stderr
        assert exit_delay < 10
        assert "Traceback" not in result.stderr, result.stderr
        wait_for(lambda: not h.session_pids(proc.pid), 10, "the script's processes to exit")
    finally:
        h.kill_session(proc.pid)


# =====================================================================================
# Initializer, max_tasks_per_child


@pytest.mark.timeout(60)
@pytest.mark.parametrize("backend", BACKENDS)
def test_initializer_error(backend: str) -> None:
    began = time.monotonic()
    _, err = _catch(
        parallel,
        h.square,
        range(6),
        n_workers=NW,
        threadpool=_threadpool(backend),
        initializer=h.bad_initializer,
    )
    record_timing(f"initializer-error:{backend}", time.monotonic() - began)
    assert type(err) is RuntimeError, repr(err)
    assert "initializer exploded on purpose" in str(err)
    assert "initializer" in _notes(err)
    _assert_pool_works(backend)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", ["sysexit", "keyboard"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_initializer_base_exception_does_not_end_the_caller(backend: str, kind: str) -> None:
    """sys.exit() or KeyboardInterrupt in an initializer must not end the caller as if it
    were its own: a clear (Exception) error naming the initializer, like fn's TaskExitError."""
    _, err = _catch(
        parallel,
        h.square,
        range(6),
        n_workers=NW,
        threadpool=_threadpool(backend),
        initializer=h.bad_initializer,
        initargs=(kind,),
    )
    assert err is not None
    assert isinstance(err, Exception), f"{type(err).__name__} escaped: {err!r}"
    assert "initializer" in str(err) + _notes(err)
    _assert_pool_works(backend)


def test_max_tasks_per_child_recycles_workers() -> None:
    out = parallel(h.pid_and_square, range(12), n_workers=NW, max_tasks_per_child=2)
    assert [v for _, v in out] == SQUARES[:12]
    per_pid = Counter(p for p, _ in out)
    assert max(per_pid.values()) <= 2, per_pid
    assert len(per_pid) >= 6, per_pid
    one = parallel(h.pid_and_square, range(10), n_workers=1, max_tasks_per_child=2)
    assert sorted(Counter(p for p, _ in one).values()) == [2] * 5  # exactly 2 items per worker
