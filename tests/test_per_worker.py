"""per_worker(): an object built once per worker process (per thread on threads, per
calling thread serially) and reused for every item, across calls on a warm pool.

Each build appends ``pid thread`` to a log file (resilience_helpers.Model), so that the
tests count builds where they happened.
"""

from __future__ import annotations

import json
import os
import pickle
import sys
import threading
from collections import defaultdict
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

if str(Path(__file__).resolve().parent) not in sys.path:  # workers import the helpers by name
    sys.path.insert(0, str(Path(__file__).resolve().parent))

import faults_helpers as h
import resilience_helpers as r

import fastparallel
from fastparallel import parallel, per_worker


def _ids_by(results: list[tuple[int, int, int, int]], key: int) -> dict[int, set[int]]:
    """Model ids seen per pid (key=1) or per thread (key=2)."""
    seen: dict[int, set[int]] = defaultdict(set)
    for result in results:
        seen[result[key]].add(result[3])
    return seen


def test_processes_build_once_per_worker_across_calls_on_a_warm_pool(tmp_path: Path) -> None:
    log = tmp_path / "builds"
    get = per_worker(r.Model, str(log), scale=2)
    first = parallel(r.use_model, range(200), get, n_workers=2)
    second = parallel(r.use_model, range(200), get, n_workers=2)
    assert [v[0] for v in first] == [v[0] for v in second] == [2 * x for x in range(200)]
    builds = r.builds(log)
    pids = {pid for pid, _ in builds}
    assert len(builds) == len(pids)  # once per worker process
    assert (
        {v[1] for v in second} == {v[1] for v in first} == pids
    )  # the same warm workers served both calls
    assert all(
        len(ids) == 1 for ids in _ids_by(first + second, 1).values()
    )  # the same object every time
    assert os.getpid() not in pids  # never built in the caller


def test_threads_build_once_per_thread(tmp_path: Path) -> None:
    log = tmp_path / "builds"
    get = per_worker(r.Model, str(log))
    out = parallel(r.use_model, range(300), get, threadpool=True, n_workers=3, chunksize=1)
    out += parallel(r.use_model, range(300), get, threadpool=True, n_workers=3, chunksize=1)
    builds = r.builds(log)
    threads = {thread for _, thread in builds}
    assert len(builds) == len(threads)  # once per thread
    assert {v[2] for v in out} == threads
    ids = _ids_by(out, 2)
    assert all(len(seen) == 1 for seen in ids.values())
    assert len({i for seen in ids.values() for i in seen}) == len(threads)  # one object per thread


def test_serially_once_per_calling_thread(tmp_path: Path) -> None:
    log = tmp_path / "builds"
    get = per_worker(r.Model, str(log))
    out = parallel(r.use_model, range(20), get, n_workers=0) + parallel(
        r.use_model, range(20), get, n_workers=0
    )
    assert len(r.builds(log)) == 1 and len({v[3] for v in out}) == 1
    other: list[list[tuple[int, int, int, int]]] = []
    thread = threading.Thread(
        target=lambda: other.append(parallel(r.use_model, range(5), get, n_workers=0))
    )
    thread.start()
    thread.join()
    assert len(r.builds(log)) == 2 and other[0][0][3] != out[0][3]  # another thread, another object
    assert get() is get()


def test_coroutines_share_one_object_on_the_event_loop_thread() -> None:
    built = []

    def build() -> object:
        built.append(threading.get_ident())
        return object()

    get = per_worker(build)

    async def use(x: int) -> int:
        return id(get())

    assert len(set(parallel(use, range(50), n_workers=8))) == 1
    assert len(built) == 1 and built[0] != threading.get_ident()


def test_nothing_is_built_while_pickling(tmp_path: Path) -> None:
    log = tmp_path / "builds"
    get = per_worker(r.Model, str(log), scale=5)
    copy = pickle.loads(pickle.dumps(get))
    assert not log.exists()
    assert (
        copy().predict(2) == 10 and copy() is get()
    )  # the same token: the same object in this thread
    assert len(r.builds(log)) == 1


def test_repr_names_the_factory_and_a_bad_factory_is_refused(tmp_path: Path) -> None:
    get = per_worker(r.Model, "some.log", scale=5)
    assert repr(get).startswith("per_worker(Model('some.log', scale=5))")
    with pytest.raises(TypeError, match="per_worker"):
        per_worker(42)  # type: ignore[arg-type]
    assert "per_worker" in dir(fastparallel) and fastparallel.per_worker is per_worker


def test_a_lambda_and_a_class_from_a_python_c_script_used_as_globals(tmp_path: Path) -> None:
    # fn, the class and the lambda live in __main__ of a `python -c` program: they travel by
    # value (cloudpickle), and get() travels with fn as one of its globals.
    code = """
import json, os, sys
from fastparallel import parallel, per_worker

class Tokenizer:
    def __init__(self, log):
        with open(log, "a") as f:
            f.write(str(os.getpid()) + "\\n")
        self.vocab = {"a": 1, "b": 2}

get_tokenizer = per_worker(Tokenizer, sys.argv[1])
get_table = per_worker(lambda: {"built_in": os.getpid()})

def encode(word):
    return get_tokenizer().vocab[word], os.getpid(), id(get_tokenizer()), get_table()["built_in"]

out = parallel(encode, ["a", "b"] * 50, n_workers=2) + parallel(encode, ["b"] * 20, n_workers=2)
print(json.dumps({"caller": os.getpid(), "out": out}))
"""
    log = tmp_path / "builds"
    done = h.subprocess.run(
        [sys.executable, "-c", code, str(log)],
        capture_output=True,
        text=True,
        env=h.script_env(),
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    out = result["out"]
    assert [v[0] for v in out] == [1, 2] * 50 + [2] * 20
    pids = [int(line) for line in log.read_text().split()]
    assert len(pids) == len(set(pids)) and set(pids) == {
        v[1] for v in out
    }  # once per worker process
    assert result["caller"] not in pids
    assert all(
        v[3] == v[1] for v in out
    )  # the lambda's object was built in the worker that uses it
    ids: dict[int, set[int]] = defaultdict(set)
    for v in out:
        ids[v[1]].add(v[2])
    assert all(len(seen) == 1 for seen in ids.values())


def test_a_forked_worker_builds_its_own_object(tmp_path: Path) -> None:
    # The caller built one first (serially); workers forked from it must not inherit it.
    log = tmp_path / "builds"
    get = per_worker(r.Model, str(log))
    mine = parallel(r.use_model, range(3), get, n_workers=0)
    out = parallel(r.use_model, range(40), get, n_workers=2, method="fork")
    builds = r.builds(log)
    assert builds[0][0] == os.getpid() == mine[0][1]
    worker_pids = {v[1] for v in out}
    assert os.getpid() not in worker_pids
    assert sorted(pid for pid, _ in builds[1:]) == sorted(worker_pids)  # each built its own, once
