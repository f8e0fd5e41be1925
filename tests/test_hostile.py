"""Exceptions, results and descriptors that refuse what fastparallel does to them.

Whatever the user's exception refuses (attributes, notes, pickling, ``str()``), the caller
gets it, with its type, message and (from a worker process) the worker's traceback; the
note naming the item is added where it can be, and a pool thread never dies of it.
"""

from __future__ import annotations

import concurrent.futures
import functools
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

import pytest

if str(Path(__file__).resolve().parent) not in sys.path:  # workers import hostile_helpers
    sys.path.insert(0, str(Path(__file__).resolve().parent))

import hostile_helpers as hh

from fastparallel import FastParallelError, RemoteError, parallel
from fastparallel.errors import add_note, item_error

NW = 2
ITEMS = range(4)

# How each backend is asked for; "auto" decides on its own, after its probe threads.
BACKENDS: dict[str, dict[str, Any]] = {
    "serial": {"n_workers": 0},
    "threads": {"threadpool": True, "n_workers": NW},
    "auto": {"threadpool": "auto", "n_workers": NW},
    "processes": {"n_workers": NW},
}


def _notes(exc: BaseException) -> str:
    return "\n".join(getattr(exc, "__notes__", ()))


def _message(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception:
        return "<str() failed>"


def _caught(fn: Any, **kwargs: Any) -> BaseException:
    with pytest.raises(BaseException) as info:
        parallel(fn, ITEMS, progress=False, **kwargs)
    return info.value


# -- unit: the note never costs the user's exception --------------------------------------


class _NotesIsAString(Exception):
    def __init__(self) -> None:
        super().__init__("notes are a str")
        self.__notes__ = "not a sequence of notes"


class _NotesPropertyRaises(Exception):
    @property
    def __notes__(self) -> list[str]:
        raise RuntimeError("no notes here")

    @__notes__.setter
    def __notes__(self, value: Any) -> None:
        raise RuntimeError("no notes here")


@pytest.mark.unit
def test_add_note_gets_a_note_onto_a_frozen_dataclass_exception() -> None:
    exc = hh.FrozenError(7)
    add_note(exc, "item 3")
    assert exc.__notes__ == ["item 3"]


@pytest.mark.unit
def test_add_note_makes_a_tuple_of_notes_a_longer_tuple() -> None:
    exc = hh.TupleNotesError("x")
    add_note(exc, "item 3")
    assert exc.__notes__ == ("the user's own note", "item 3")


@pytest.mark.unit
@pytest.mark.parametrize("cls", [_NotesIsAString, _NotesPropertyRaises])
def test_add_note_leaves_alone_notes_it_cannot_extend(cls: type[Exception]) -> None:
    exc = cls()
    add_note(exc, "item 3")  # does not raise
    if cls is _NotesIsAString:
        assert exc.__notes__ == "not a sequence of notes"


@pytest.mark.unit
@pytest.mark.parametrize("kind", ["frozen", "tuple_notes", "hostile_str", "required_args"])
def test_item_error_returns_the_users_exception(kind: str) -> None:
    exc = hh.make(kind)
    assert item_error(exc, 3, "abc") is exc
    assert "item 3 ('abc')" in _notes(exc)


# -- fault 1: exceptions that refuse notes, on every backend ----------------------------------


@pytest.mark.integration
@pytest.mark.timeout(120)
@pytest.mark.parametrize("backend", list(BACKENDS))
@pytest.mark.parametrize("kind", ["frozen", "tuple_notes"])
def test_an_exception_that_refuses_notes_reaches_the_caller(kind: str, backend: str) -> None:
    fn = functools.partial(hh.raise_on_one, kind=kind)
    exc = _caught(fn, **BACKENDS[backend])
    assert type(exc) is type(hh.make(kind))
    assert _message(exc) == _message(hh.make(kind))
    assert "item 1 (1)" in _notes(exc)
    if kind == "frozen":
        assert exc.code == 7
    else:
        assert exc.__notes__[0] == "the user's own note"
    if backend == "processes":
        assert "raise_on_one" in str(exc.__cause__)  # the worker's traceback
    else:
        assert exc.__traceback__ is not None
    # The pool that ran it still serves: no thread died of it.
    assert parallel(fn, [0, 2, 3], progress=False, **BACKENDS[backend]) == [0, 2, 3]


@pytest.mark.integration
@pytest.mark.timeout(120)
@pytest.mark.parametrize("n_workers", [0, NW])
@pytest.mark.parametrize("kind", ["frozen", "tuple_notes"])
def test_a_coroutine_that_raises_an_exception_refusing_notes(kind: str, n_workers: int) -> None:
    fn = functools.partial(hh.araise_on_one, kind=kind)
    exc = _caught(fn, n_workers=n_workers)
    assert type(exc) is type(hh.make(kind))
    assert "item 1 (1)" in _notes(exc)


@pytest.mark.integration
@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", ["frozen", "tuple_notes"])
def test_parallel_async_delivers_an_exception_refusing_notes(kind: str) -> None:
    import asyncio

    from fastparallel.aio import parallel_async

    async def main() -> BaseException:
        try:
            await parallel_async(functools.partial(hh.araise_on_one, kind=kind), ITEMS)
        except Exception as exc:
            return exc
        raise AssertionError("no exception")

    exc = asyncio.run(main())
    assert type(exc) is type(hh.make(kind))
    assert "item 1 (1)" in _notes(exc)


@pytest.mark.integration
@pytest.mark.timeout(120)
@pytest.mark.parametrize("backend", ["threads", "processes"])
def test_return_exceptions_keeps_a_frozen_exception_in_its_slot(backend: str) -> None:
    fn = functools.partial(hh.raise_on_one, kind="frozen")
    out = parallel(fn, ITEMS, return_exceptions=True, progress=False, **BACKENDS[backend])
    assert out[0] == 0 and out[2:] == [2, 3]
    assert type(out[1]) is hh.FrozenError and out[1].code == 7
    assert "item 1 (1)" in _notes(out[1])


# -- the sweep: exceptions that refuse pickling, str(), their constructor ----------------------


@pytest.mark.integration
@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    "kind", ["refuses_pickling", "hostile_str", "locked_attribute", "required_args"]
)
def test_a_worker_exception_that_refuses_pickling_keeps_its_type(kind: str) -> None:
    fn = functools.partial(hh.raise_on_one, kind=kind)
    exc = _caught(fn, n_workers=NW)
    assert type(exc) is type(hh.make(kind))
    assert _message(exc) == _message(hh.make(kind))
    assert "item 1 (1)" in _notes(exc)
    assert "raise_on_one" in str(exc.__cause__)
    if kind == "locked_attribute":
        assert exc.detail == "kept" and "lock" in exc.lock  # what cannot travel: its repr
    if kind == "required_args":
        assert (exc.a, exc.b) == (1, 2)


@pytest.mark.integration
@pytest.mark.timeout(120)
def test_an_exception_that_cannot_be_rebuilt_here_names_its_type_and_message() -> None:
    fn = functools.partial(hh.raise_on_one, kind="only_in_worker", caller=os.getpid())
    exc = _caught(fn, n_workers=NW)
    assert type(exc) is RemoteError
    assert exc.type_name == "hostile_helpers.OnlyInWorkerError"
    assert str(exc) == "hostile_helpers.OnlyInWorkerError: rebuilt only in the worker"
    assert "item 1 (1)" in _notes(exc)
    assert "raise_on_one" in str(exc.__cause__)


@pytest.mark.integration
@pytest.mark.timeout(120)
def test_an_exception_kept_by_an_exception_travels_with_it() -> None:
    fn = functools.partial(hh.raise_on_one, kind="keeps_an_error")
    exc = _caught(fn, n_workers=NW)
    assert type(exc) is hh.KeepsAnError
    assert type(exc.original) is hh.FrozenError and exc.original.code == 3


@pytest.mark.integration
@pytest.mark.timeout(120)
@pytest.mark.skipif(sys.version_info < (3, 11), reason="ExceptionGroup is new in 3.11")
def test_an_exception_group_from_a_worker_keeps_its_members() -> None:
    fn = functools.partial(hh.raise_on_one, kind="group")
    exc = _caught(fn, n_workers=NW)
    assert type(exc).__name__ == "ExceptionGroup" and str(exc) == "a group (2 sub-exceptions)"
    assert [type(e) for e in exc.exceptions] == [ValueError, hh.FrozenError]
    assert exc.exceptions[1].code == 4


@pytest.mark.integration
@pytest.mark.timeout(120)
def test_a_result_whose_pickling_raises_system_exit_fails_its_item_only() -> None:
    from fastparallel import TaskExitError

    out = parallel(
        hh.exits_when_pickled_on_one,
        range(4),
        n_workers=NW,
        chunksize=4,
        return_exceptions=True,
        progress=False,
    )
    assert out[0] == 0 and out[2:] == [2, 3]  # the worker lived on: the others came back
    assert type(out[1]) is TaskExitError and type(out[1].__cause__) is SystemExit
    assert "item 1 (1)" in str(out[1])


class _FailingExecutor(concurrent.futures.Executor):
    """An executor whose every future fails with an exception whose str() and repr() raise."""

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> concurrent.futures.Future[Any]:
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        future.set_exception(hh.HostileStrError("transport"))
        return future


@pytest.mark.integration
@pytest.mark.timeout(60)
def test_an_executor_failure_whose_repr_raises_still_names_the_chunk() -> None:
    exc = _caught(abs, executor=_FailingExecutor())
    assert type(exc) is RemoteError and exc.type_name == "HostileStrError"
    assert "item 0 (0)" in str(exc) and type(exc.__cause__) is hh.HostileStrError


@pytest.mark.integration
@pytest.mark.timeout(120)
def test_a_result_whose_unpickling_raises_system_exit_here_fails_its_item_only() -> None:
    from fastparallel import TaskExitError

    fn = functools.partial(hh.exits_in_caller_on_one, caller=os.getpid())
    out = parallel(fn, range(4), n_workers=NW, return_exceptions=True, progress=False)
    assert out[0] == 0 and out[2:] == [2, 3]
    assert type(out[1]) is TaskExitError and type(out[1].__cause__) is SystemExit
    assert "item 1 (1)" in str(out[1]) and "could not be unpickled" in str(out[1])


# -- a fault of fastparallel's own in a pool thread ends the call, never hangs it --------------


@pytest.mark.integration
@pytest.mark.timeout(120)
def test_a_pool_thread_that_fails_reports_its_chunk(monkeypatch: pytest.MonkeyPatch) -> None:
    from fastparallel.backends import threads

    def broken(exc: BaseException, index: int, item: Any) -> BaseException:
        raise RuntimeError("a bug in fastparallel")

    monkeypatch.setattr(threads, "item_error", broken)
    fn = functools.partial(hh.raise_on_one, kind="frozen")
    exc = _caught(fn, threadpool=True, n_workers=NW)
    assert type(exc) is FastParallelError
    assert "bug in fastparallel" in str(exc)
    assert isinstance(exc.__cause__, RuntimeError)


# -- fault 2: no result is lost for lack of descriptors -------------------------------------------

_SHORT_OF_DESCRIPTORS = """
import logging
import hostile_helpers as hh

class Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())

if __name__ == "__main__":
    records = Records()
    logging.getLogger("fastparallel").addHandler(records)
    logging.getLogger("fastparallel").setLevel(logging.DEBUG)
    if sys.argv[2] == "dropped":  # no room check before the call: the kernel drops descriptors
        import fastparallel.backends.processes.pool as pool
        pool._passable_fds = lambda: 253
    parallel(abs, range(4), n_workers=2, progress=False)  # the workers start with room
    hh.leave_room(12)
    before = hh.open_descriptors()
    out = parallel(hh.many_arrays, range(6), n_workers=2, progress=False, return_exceptions=True)
    report = {
        "results": [[float(a[0]) for a in r] if isinstance(r, list) else repr(r) for r in out],
        "leaked": hh.open_descriptors() - before,
        "log": records.messages,
    }
    print(json.dumps(report))
"""


@pytest.mark.integration
@pytest.mark.timeout(180)
@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts /proc/self/fd")
@pytest.mark.parametrize(
    ("how", "logged"),
    [
        ("room_checked", "descriptors free under RLIMIT_NOFILE"),
        ("dropped", "descriptors passed with a message were dropped"),
    ],
)
def test_results_come_through_the_pipe_when_the_caller_is_short_of_descriptors(
    tmp_path: Path, how: str, logged: str
) -> None:
    pytest.importorskip("numpy")
    import json

    from faults_helpers import run_script

    done = run_script(tmp_path, _SHORT_OF_DESCRIPTORS, timeout=150, args=[how])
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["results"] == [[float(i)] * hh.ARRAYS for i in range(6)]
    assert report["leaked"] == 0
    assert any(logged in message for message in report["log"]), report["log"]


@pytest.mark.integration
@pytest.mark.timeout(120)
@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts /proc/self/fd")
def test_items_go_through_the_pipe_when_a_worker_is_short_of_descriptors() -> None:
    np = pytest.importorskip("numpy")
    items = [
        [np.full(hh.ARRAY_BYTES // 8, i, dtype=np.float64) for _ in range(hh.ARRAYS)]
        for i in range(4)
    ]
    out = parallel(hh.total, items, n_workers=NW, initializer=hh.leave_four, progress=False)
    assert out == [float(i * hh.ARRAYS * hh.ARRAY_BYTES // 8) for i in range(4)]


@pytest.mark.integration
@pytest.mark.timeout(120)
@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts /proc/self/fd")
def test_large_arguments_reach_a_worker_short_of_descriptors() -> None:
    np = pytest.importorskip("numpy")
    arrays = [np.full(hh.ARRAY_BYTES // 8, 1.0) for _ in range(hh.ARRAYS)]
    out = parallel(
        hh.plus_total,
        range(4),
        arrays=arrays,
        n_workers=NW,
        initializer=hh.leave_four,
        method="template",  # workers forked from the template: the call comes as a message
        progress=False,
    )
    assert out == [x + hh.ARRAYS * hh.ARRAY_BYTES / 8 for x in range(4)]


# -- fault 8: a streamed timeout counts the time the call waits, not the consumer's ------------


class _ShiftedClock:
    """The dispatcher's clock moved on by ``shift``: the consumer's time, without waiting."""

    def __init__(self) -> None:
        self.shift = 0.0

    def monotonic(self) -> float:
        return time.monotonic() + self.shift

    @staticmethod
    def sleep(seconds: float) -> None:
        time.sleep(seconds)


@pytest.mark.integration
@pytest.mark.timeout(120)
@pytest.mark.parametrize("backend", ["threads", "processes"])
def test_a_slow_consumer_of_a_generator_gets_every_result(
    backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fastparallel.core import dispatch

    clock = _ShiftedClock()
    monkeypatch.setattr(dispatch, "time", clock)
    got = []
    stream = parallel(
        hh.identity,
        range(6),
        timeout=30,
        return_as="generator",
        progress=False,
        **BACKENDS[backend],
    )
    for value in stream:
        got.append(value)
        clock.shift += 60  # the consumer keeps each result twice the timeout
    assert got == list(range(6))


# -- fault 9: a pool nested in fn, handed a function of the script --------------------------------

_NESTED_MAIN_POOL = """
import multiprocessing
import pickle

def square(x):
    return x * x

def outer(n):
    with multiprocessing.get_context("fork").Pool(2) as pool:
        return sum(pool.map(square, range(n)))

def nested_parallel(n):
    return sum(parallel(square, range(n), n_workers=2, progress=False))

if __name__ == "__main__":
    report = {"nested_parallel": parallel(nested_parallel, [3, 4], n_workers=2, progress=False)}
    try:
        parallel(outer, [3, 4], n_workers=2, progress=False)
    except Exception as exc:
        report["type"] = type(exc).__name__
        report["picklingerror"] = isinstance(exc, pickle.PicklingError)
        report["notes"] = list(getattr(exc, "__notes__", []))
    print(json.dumps(report))
"""


@pytest.mark.integration
@pytest.mark.timeout(180)
def test_a_pool_nested_in_fn_with_a_function_of_the_script_says_what_to_do(
    tmp_path: Path,
) -> None:
    import json

    from faults_helpers import run_script

    done = run_script(tmp_path, _NESTED_MAIN_POOL, timeout=150)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["nested_parallel"] == [5, 14]  # what the note offers works
    assert report["picklingerror"], report
    notes = "\n".join(report["notes"])
    assert "workers do not import it" in notes
    assert "Define that function in a module" in notes
    assert "fastparallel.parallel() inside fn" in notes
    assert re.search(r"raised by fn on item \d \(\d\)", notes)


@pytest.mark.unit
def test_only_pickle_failing_on_main_gets_the_nested_pool_note() -> None:
    import pickle

    from fastparallel.backends.processes.wire.remote_errors import _names_main

    assert _names_main(pickle.PicklingError("attribute lookup f on __main__ failed"))
    assert _names_main(AttributeError("Can't get attribute 'f' on <module '__main__'>"))
    assert not _names_main(pickle.PicklingError("cannot pickle '_thread.lock' object"))
    assert not _names_main(ValueError("__main__"))
    assert _names_main(RemoteError("_pickle.PicklingError: on __main__", "_pickle.PicklingError"))
