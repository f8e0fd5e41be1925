"""Helpers for the fault-tolerance tests (tests/test_faults.py, tests/test_stress.py).

Everything a worker process runs lives here, at module level, so that workers import
it by name (tests/ is on ``sys.path`` under pytest, and on ``PYTHONPATH`` in the
subprocess scripts started by :func:`run_script` / :func:`start_script`).

Synchronisation between a test and its workers is done with files: a worker writes a
"mark" file (atomically, by rename) when it starts an item, and the test waits for it
with a bounded poll (:func:`wait_for`). No bare sleeps are used as synchronisation.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

TESTS_DIR = Path(__file__).resolve().parent
ROOT = TESTS_DIR.parent
SRC_DIR = ROOT / "src"

#: Generous bound for "promptly" / "within a second" in the spec.
PROMPT = 5.0


# ---------------------------------------------------------------------------
# Timings: every test that measures a time-to-error records it here, so a run can
# report them (set FASTPARALLEL_FAULT_TIMINGS to a file path to collect them).


def record_timing(case: str, seconds: float) -> None:
    path = os.environ.get("FASTPARALLEL_FAULT_TIMINGS")
    if not path:
        return
    with open(path, "a") as f:
        f.write(json.dumps({"case": case, "seconds": round(seconds, 4)}) + "\n")


# ---------------------------------------------------------------------------
# Polling and process inspection.


def wait_for(
    predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.01
) -> Any:
    """Poll ``predicate`` until it returns something true; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def proc_stat(pid: int) -> tuple[str, int, int] | None:
    """``(state, ppid, session id)`` of a process, or None if it does not exist."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            data = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    except OSError:
        return None
    rest = data[data.rindex(")") + 2 :].split()
    return rest[0], int(rest[1]), int(rest[3])


def pid_alive(pid: int) -> bool:
    """True if ``pid`` exists and is not a zombie (a zombie has exited)."""
    stat = proc_stat(pid)
    return stat is not None and stat[0] not in ("Z", "X")


def all_gone(pids: Iterable[int]) -> bool:
    return not any(pid_alive(p) for p in pids)


def wait_gone(pids: Iterable[int], timeout: float, what: str = "processes") -> float:
    """Wait until none of ``pids`` is alive; returns the seconds it took."""
    pids = list(pids)
    began = time.monotonic()
    wait_for(lambda: all_gone(pids), timeout, f"{what} {[p for p in pids if pid_alive(p)]} to exit")
    return time.monotonic() - began


def all_pids() -> list[int]:
    return [int(name) for name in os.listdir("/proc") if name.isdigit()]


def session_pids(sid: int) -> list[int]:
    """Live (non-zombie) processes of session ``sid``."""
    out = []
    for pid in all_pids():
        stat = proc_stat(pid)
        if stat is not None and stat[2] == sid and stat[0] not in ("Z", "X"):
            out.append(pid)
    return out


def descendants(root: int) -> list[tuple[int, str]]:
    """``(pid, state)`` of every descendant of ``root`` (children, grandchildren, ...)."""
    children: dict[int, list[tuple[int, str]]] = {}
    for pid in all_pids():
        stat = proc_stat(pid)
        if stat is not None:
            children.setdefault(stat[1], []).append((pid, stat[0]))
    out: list[tuple[int, str]] = []
    todo = [root]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child[0])
    return out


# ---------------------------------------------------------------------------
# Mark files: a worker announces "I am running item x in process pid".


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + f".tmp{os.getpid()}.{threading.get_ident()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def mark(marks: str, x: Any) -> None:
    _write_atomic(Path(marks) / f"item-{x}", json.dumps({"pid": os.getpid(), "time": time.time()}))


def read_marks(marks: str | Path) -> dict[str, dict[str, Any]]:
    """``{"item-3": {"pid": ..., "time": ...}, ...}`` for the marks written so far."""
    out: dict[str, dict[str, Any]] = {}
    if not Path(marks).is_dir():
        return out
    for path in Path(marks).iterdir():
        if path.name.startswith("item-") and ".tmp" not in path.name:
            out[path.name] = json.loads(path.read_text())
    return out


def marked_pids(marks: str | Path) -> set[int]:
    return {m["pid"] for m in read_marks(marks).values()}


def _at_least(marks: dict[str, dict[str, Any]], n: int) -> dict[str, dict[str, Any]] | None:
    return marks if len(marks) >= n else None


def wait_marks(marks: str | Path, n: int, timeout: float = 30.0) -> dict[str, dict[str, Any]]:
    return wait_for(
        lambda: _at_least(read_marks(marks), n),
        timeout,
        f"{n} items to start running",
    )


# ---------------------------------------------------------------------------
# Functions run by workers. They are called as fn(item, **kwargs).


def square(x: int) -> int:
    return x * x


def getpid(_: Any = None) -> int:
    return os.getpid()


def getppid(_: Any = None) -> int:
    return os.getppid()


def pid_and_square(x: int) -> tuple[int, int]:
    return os.getpid(), x * x


def type_name(x: Any) -> str:
    return type(x).__name__


def crash_on(x: int, *, target: int, how: str, stamp: str | None = None) -> int:
    """Kill the worker process while running item ``target``."""
    if x == target:
        if stamp is not None:
            _write_atomic(Path(stamp), repr(time.time()))
        if how == "exit":
            os._exit(7)
        elif how == "sigkill":
            os.kill(os.getpid(), signal.SIGKILL)
            time.sleep(30)  # never reached: SIGKILL is not deliverable later than now
        elif how == "segfault":
            ctypes.string_at(0)
        raise AssertionError(f"unknown crash {how!r}")
    return x * x if isinstance(x, int) else x


def mark_then_block(
    x: int,
    *,
    marks: str,
    quick: Iterable[int] = (),
    fail: Iterable[int] = (),
    fail_when_running: int = 0,
    stamp: str | None = None,
    event: threading.Event | None = None,
    seconds: float = 30.0,
) -> int:
    """Write a mark for ``x``; then return at once (quick), raise (fail) or block.

    A failing item first waits until ``fail_when_running`` items (itself included) have
    started, then writes the time to ``stamp`` and raises ValueError. Blocking waits on
    ``event`` (threads: the test releases them) or sleeps ``seconds`` (processes: the
    test expects them to be killed long before).
    """
    mark(marks, x)
    if x in fail:
        if fail_when_running:
            wait_marks(marks, fail_when_running)
        if stamp is not None:
            _write_atomic(Path(stamp), repr(time.time()))
        raise ValueError(f"item {x} failed on purpose")
    if x in quick:
        return x
    if event is not None:
        event.wait(seconds)
    else:
        time.sleep(seconds)
    return x


class MismatchedInit(Exception):
    """``__init__`` takes two arguments but ``args`` holds one: pickle cannot rebuild it."""

    def __init__(self, a: Any, b: Any):
        super().__init__(f"mismatched init {a} {b}")
        self.a = a
        self.b = b


class WithLock(Exception):
    """Carries a lock: cannot be pickled at all."""

    def __init__(self, message: str):
        super().__init__(message)
        self.lock = threading.Lock()


class WithSocket(Exception):
    """Carries a socket: cannot be pickled at all."""

    def __init__(self, message: str):
        super().__init__(message)
        self.sock = socket.socket()


class CustomBase(BaseException):
    """A BaseException that is neither SystemExit nor KeyboardInterrupt."""


def raise_on(x: int, *, target: int, kind: str) -> int:
    """Raise an exception of ``kind`` on item ``target``; square the others."""
    if x != target:
        return x * x
    if kind == "value":
        raise ValueError(f"plain failure on {x}")
    if kind == "mismatched":
        raise MismatchedInit(x, "b")
    if kind == "lock":
        raise WithLock(f"lock failure on {x}")
    if kind == "socket":
        raise WithSocket(f"socket failure on {x}")
    if kind == "local":

        class LocalError(Exception):
            guard = threading.Lock()  # the class itself cannot be pickled, not even by value

        raise LocalError(f"local failure on {x}")
    if kind == "sysexit":
        sys.exit(3)
    if kind == "keyboard":
        raise KeyboardInterrupt("interrupt raised by fn")
    if kind == "base":
        raise CustomBase("custom base exception")
    raise AssertionError(kind)


def lock_result_on(x: int, *, target: int) -> Any:
    """Return an unpicklable result for item ``target``."""
    if x == target:
        return threading.Lock()
    return x * x


def bad_initializer(kind: str = "runtime") -> None:
    if kind == "sysexit":
        sys.exit(4)
    if kind == "keyboard":
        raise KeyboardInterrupt("initializer interrupted on purpose")
    raise RuntimeError("initializer exploded on purpose")


def _fail_to_load(message: str) -> None:
    raise ValueError(message)


class FailsToLoad:
    """Pickles fine; unpickling it raises ValueError (in the other process)."""

    def __reduce__(self) -> Any:
        return (_fail_to_load, ("this object cannot be loaded",))


class ExitsOnLoad:
    """Pickles fine; unpickling it ends the process that unpickles it (exit code 3)."""

    def __reduce__(self) -> Any:
        return (os._exit, (3,))


def unloadable_result_on(x: int, *, target: int) -> Any:
    """Item ``target`` returns an object that pickles in the worker but cannot be loaded."""
    if x == target:
        return FailsToLoad()
    return x * x


def nested_crash(x: int) -> list[int]:
    """Runs in a worker: a nested process pool whose worker dies on inner item 2."""
    from fastparallel import parallel

    return parallel(crash_on, range(4), target=2, how="exit")


def nested_block(x: int, *, marks: str) -> list[int]:
    """Runs in a worker: a nested pool whose one item marks itself and blocks for 120 s."""
    from fastparallel import parallel

    return parallel(mark_then_block, [100 + x], marks=marks, seconds=120)


def nested_processes(x: int) -> dict[str, Any]:
    """Runs in a worker: a nested process pool with the default n_workers."""
    from fastparallel import parallel
    from fastparallel.cpus import default_workers

    inner = parallel(pid_and_square, range(6))
    return {
        "pid": os.getpid(),
        "default": default_workers(False),
        "inner_pids": sorted({p for p, _ in inner}),
        "values": [v for _, v in inner],
    }


def nested_threads(x: int) -> list[int]:
    from fastparallel import parallel

    return parallel(square, range(x), threadpool=True)


def failing_input(n: int, marks: str, wait_running: int, stamp: str) -> Iterator[int]:
    """Yield 0..n-1; once ``wait_running`` items run in workers, raise (time in ``stamp``)."""
    yield from range(n)
    wait_marks(marks, wait_running)
    _write_atomic(Path(stamp), repr(time.time()))
    raise LookupError("the input iterable broke on purpose")


# ---------------------------------------------------------------------------
# Subprocess scripts.


def script_env() -> dict[str, str]:
    env = dict(os.environ)
    parts = [str(TESTS_DIR), str(SRC_DIR)]
    if env.get("PYTHONPATH"):
        parts.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(parts)
    env["PYTHONUNBUFFERED"] = "1"
    env.pop("FASTPARALLEL_FAULT_TIMINGS", None)
    return env


SCRIPT_PRELUDE = """\
import json, os, signal, sys, time, traceback
from pathlib import Path
signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started with SIGINT ignored
import fastparallel
from fastparallel import parallel
import faults_helpers as h
OUT = Path(sys.argv[1])
def dump(name, obj):
    h._write_atomic(OUT / name, json.dumps(obj))
"""


def write_script(tmp_path: Path, body: str, name: str = "script.py") -> Path:
    """A script: the prelude, then ``body`` (which should guard with ``if __name__ == "__main__"``)."""
    path = tmp_path / name
    path.write_text(SCRIPT_PRELUDE + textwrap.dedent(body))
    return path


def start_script(tmp_path: Path, body: str, args: Iterable[str] = ()) -> subprocess.Popen[str]:
    """Start a script in a new session (its own process group); stdout/stderr go to files
    (not pipes: a surviving worker would hold a pipe open)."""
    path = write_script(tmp_path, body)
    with open(tmp_path / "stdout.txt", "w") as stdout, open(tmp_path / "stderr.txt", "w") as stderr:
        return subprocess.Popen(
            [sys.executable, str(path), str(tmp_path), *args],
            stdout=stdout,
            stderr=stderr,
            text=True,
            env=script_env(),
            cwd=str(tmp_path),
            start_new_session=True,
        )


def finish_script(
    proc: subprocess.Popen[str], tmp_path: Path, timeout: float
) -> subprocess.CompletedProcess[str]:
    """Wait for a script from :func:`start_script`; on timeout kill its session and fail."""
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_session(proc.pid)
        proc.kill()
        proc.wait()
        raise AssertionError(
            f"the script did not finish within {timeout}s; stderr:\n"
            + (tmp_path / "stderr.txt").read_text()[-3000:]
        ) from None
    return subprocess.CompletedProcess(
        proc.args,
        proc.returncode,
        (tmp_path / "stdout.txt").read_text(),
        (tmp_path / "stderr.txt").read_text(),
    )


def run_script(
    tmp_path: Path, body: str, timeout: float, args: Iterable[str] = ()
) -> subprocess.CompletedProcess[str]:
    """Run a script to its end (in its own session, see :func:`session_pids`)."""
    return finish_script(start_script(tmp_path, body, args), tmp_path, timeout)


def kill_session(sid: int) -> None:
    """Clean-up after a failed test: SIGKILL whatever is left in the session."""
    for pid in session_pids(sid):
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
