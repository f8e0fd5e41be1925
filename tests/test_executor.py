"""fastparallel.Executor as a user meets it: submit, map, crashes, cancellation, shutdown, exit.

CPython's own tests of the interface run in tests/test_executor_cpython.py; these cover
what they do not: crash isolation, lambdas and scripts without a ``__main__`` guard,
the native path of ``parallel(executor=...)``, asyncio, Ctrl-C and interpreter exit
(in scripts, synchronised by mark files: see tests/faults_helpers.py).
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import os
import signal
import subprocess
import sys
import threading
import time
import weakref
from concurrent import futures
from concurrent.futures.process import BrokenProcessPool

import faults_helpers as h
import pytest

import fastparallel
from fastparallel import Executor, WorkerDiedError, parallel

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def wait_file(path, timeout=30.0):
    return h.wait_for(lambda: os.path.exists(path), timeout, f"{path} to appear")


def block_until(path: str, result=None):
    """Runs in a worker: wait (bounded) until the test creates ``path``."""
    h.wait_for(lambda: os.path.exists(path), 60.0, f"{path}")
    return result


def set_env(name: str, value: str) -> None:
    os.environ[name] = value


def marked_run(marks: str, x):
    h.mark(marks, x)
    return x


@pytest.fixture
def executor():
    with Executor(2) as pool:
        yield pool


def test_submit_map_and_errors_keep_their_type(executor):
    assert executor.submit(lambda x, *, y: x + y, 1, y=2).result() == 3
    assert list(executor.map(divmod, range(7), [3] * 7, chunksize=3)) == [
        divmod(x, 3) for x in range(7)
    ]
    error = executor.submit(divmod, 1, 0).exception()
    assert isinstance(error, ZeroDivisionError)
    assert "divmod(1, 0)" in " ".join(error.__notes__)


def test_a_sigkilled_worker_fails_only_its_future_and_is_replaced(tmp_path):
    marks = str(tmp_path / "marks")
    os.mkdir(marks)
    with Executor(2) as pool:
        doomed = pool.submit(h.mark_then_block, "doomed", marks=marks, seconds=60)
        other = pool.submit(h.mark_then_block, "other", marks=marks, seconds=60)
        pids = h.wait_marks(marks, 2)
        os.kill(pids["item-doomed"]["pid"], signal.SIGKILL)
        error = doomed.exception(timeout=30)
        assert isinstance(error, WorkerDiedError) and isinstance(error, BrokenProcessPool)
        assert "SIGKILL" in str(error) and "mark_then_block('doomed'" in str(error)
        assert not other.done()  # its worker goes on
        assert pool.submit(pow, 2, 5).result(timeout=30) == 32  # and the next submit works
        os.kill(pids["item-other"]["pid"], signal.SIGKILL)
        assert isinstance(other.exception(timeout=30), WorkerDiedError)
        assert pool.submit(os.getpid).result(timeout=30) not in {m["pid"] for m in pids.values()}


def test_a_crash_fails_only_the_task_that_ran_it(executor):
    futures = [executor.submit(h.crash_on, x, target=3, how="sigkill") for x in range(6)]
    outcomes = [f.exception(timeout=30) or f.result() for f in futures]
    assert isinstance(outcomes[3], WorkerDiedError) and outcomes[3].indices
    assert [o for i, o in enumerate(outcomes) if i != 3] == [0, 1, 4, 16, 25]


def test_map_with_chunks_pins_a_crash_on_one_task(executor):
    from functools import partial

    crash_three = partial(h.crash_on, target=3, how="sigkill")
    got = []
    mapped = executor.map(crash_three, range(6), chunksize=6)
    for _ in range(6):
        try:
            got.append(next(mapped))
        except WorkerDiedError as exc:
            got.append(exc.indices)
            break
    assert got == [0, 1, 4, (3,)]
    # the chunk's other tasks ran again on their own: the executor goes on
    assert list(executor.map(crash_three, [4, 5], chunksize=2)) == [16, 25]


def test_a_worker_killed_while_idle_is_replaced_before_it_gets_a_task():
    with Executor(1) as pool:
        pid = pool.submit(os.getpid).result(timeout=30)
        os.kill(pid, signal.SIGKILL)
        h.wait_gone([pid], 30, "the killed idle worker")
        time.sleep(0.1)  # not synchronisation: the pool begins again after 0.05 s idle
        assert pool.submit(pow, 2, 3).result(timeout=30) == 8


def test_cancelled_futures_never_run(tmp_path):
    marks, release = str(tmp_path / "marks"), str(tmp_path / "go")
    os.mkdir(marks)
    with Executor(1) as pool:
        first = pool.submit(block_until, release)  # runs
        second = pool.submit(block_until, release)  # queued for the worker: running too
        later = [pool.submit(marked_run, marks, x) for x in range(20)]
        assert all(f.cancel() for f in later)
        open(release, "w").close()
        first.result(timeout=30)
        second.result(timeout=30)
        assert pool.submit(marked_run, marks, "after").result(timeout=30) == "after"
    assert sorted(os.listdir(marks)) == ["item-after"]
    assert all(f.cancelled() for f in later)


def test_shutdown_cancel_futures_and_terminate_workers(tmp_path):
    release = str(tmp_path / "go")
    pool = Executor(1)
    running = pool.submit(block_until, release)
    queued = pool.submit(block_until, release)
    pending = [pool.submit(pow, 2, x) for x in range(10)]
    pool.terminate_workers()
    assert all(f.cancelled() for f in pending)
    for future in (running, queued):
        assert isinstance(future.exception(timeout=30), WorkerDiedError)
    pool.shutdown()
    with pytest.raises(RuntimeError, match="after shutdown"):
        pool.submit(pow, 2, 2)


def test_done_callbacks_may_submit_even_while_terminating(tmp_path):
    seen = []
    with Executor(1) as pool:
        first = pool.submit(pow, 2, 3)
        first.add_done_callback(lambda f: seen.append(pool.submit(pow, 2, 4)))
        assert first.result(timeout=30) == 8
        h.wait_for(lambda: seen, 30, "the callback's submit")
        assert seen[0].result(timeout=30) == 16
        blocked = pool.submit(block_until, str(tmp_path / "never"))
        refused = []

        def again(future):
            try:
                pool.submit(pow, 2, 5)
            except RuntimeError as exc:
                refused.append(exc)

        blocked.add_done_callback(again)
        pool.terminate_workers()
        assert isinstance(blocked.exception(timeout=30), WorkerDiedError)
    assert refused and "shutdown" in str(refused[0])


def test_map_buffersize_reads_an_endless_input_lazily():
    with Executor(2) as pool:
        seen = []

        def numbers():
            for x in itertools.count():
                seen.append(x)
                yield x

        mapped = pool.map(abs, numbers(), buffersize=3)
        assert [next(mapped) for _ in range(5)] == [0, 1, 2, 3, 4]
        assert len(seen) <= 5 + 3
        mapped.close()
    with pytest.raises(ValueError), Executor(1) as pool:
        pool.map(abs, [1], buffersize=0)


def test_map_timeout_and_leaving_early_cancels_the_rest(tmp_path):
    release = str(tmp_path / "go")
    with Executor(1) as pool:
        mapped = pool.map(block_until, [release] * 8, timeout=0.2)
        try:
            with pytest.raises(futures.TimeoutError):  # the builtin one from Python 3.11 on
                next(mapped)
        finally:
            open(release, "w").close()
    # leaving the iterator cancelled what had not started: shutdown did not wait for them


def test_max_tasks_per_child_replaces_workers():
    with Executor(1, max_tasks_per_child=2) as pool:
        pids = [pool.submit(os.getpid).result() for _ in range(6)]
        assert len(set(pids)) == 3
        # chunks of map(), and short tasks travelling together, hold no more than that
        mapped = list(pool.map(h.getpid, range(12), chunksize=5))
        many = [f.result() for f in [pool.submit(os.getpid) for _ in range(200)]]
    assert max(mapped.count(pid) for pid in mapped) <= 2
    assert max(many.count(pid) for pid in many) <= 2


def test_initializer_runs_in_every_worker_and_its_failure_breaks_the_executor():
    with Executor(2, initializer=set_env, initargs=("FP_INIT", "yes")) as pool:
        assert list(pool.map(os.getenv, ["FP_INIT"] * 4)) == ["yes"] * 4
    with Executor(1, initializer=divmod, initargs=(1, 0)) as pool:
        future = pool.submit(pow, 2, 2)
        with pytest.raises(BrokenProcessPool) as caught:
            future.result(timeout=30)
        assert isinstance(caught.value.__cause__, ZeroDivisionError)
        with pytest.raises(BrokenProcessPool):
            pool.submit(pow, 2, 2)


def test_threads():
    seen = set()
    with Executor(3, threadpool=True) as pool:
        assert list(pool.map(lambda x: seen.add(threading.get_ident()) or x, range(30))) == list(
            range(30)
        )
        assert pool.submit(sys.exit, 3).exception().code == 3  # as concurrent.futures does
    assert threading.get_ident() not in seen


class Result:
    """A result that can be weakly referenced."""


def make_result(_):
    return Result()


@pytest.mark.parametrize("threadpool", [True, False], ids=["threads", "processes"])
def test_a_result_dropped_by_the_caller_is_freed_while_the_pool_idles(threadpool):
    # On a free-threaded build the last reference to a result, dropped here, hands it back
    # to the pool's thread that created it, to be freed there: not while that thread waits
    # for work forever (CPython's test_free_reference, which waits 30 s, failed then).
    for _ in range(8):  # the hand-back depends on timing: tried on several fresh pools
        with Executor(5, threadpool=threadpool) as pool:
            for result in pool.map(make_result, range(10)):
                freed = weakref.ref(result)
                del result
                gc.collect()
                h.wait_for(
                    lambda freed=freed: freed() is None, 20, "the dropped result to be freed"
                )


async def make_result_async(_):
    return Result()


@pytest.mark.parametrize("fn", [make_result, make_result_async], ids=["threads", "coroutines"])
def test_results_dropped_after_parallel_are_freed_while_its_warm_pool_idles(fn):
    # The same hand-back after parallel(): its pool threads (or event loop thread) stay
    # warm and idle. No gc.collect() here, as in a user's loop. Without the idle wakes on
    # 3.13t, only a later garbage collection freed them (after about 21 s here; never,
    # for the event loop's); with them, within the 0.5 s wake.
    for _ in range(4):
        results = parallel(fn, range(10), threadpool=True, n_workers=4)
        freed = [weakref.ref(r) for r in results]
        del results
        h.wait_for(
            lambda freed=freed: all(f() is None for f in freed), 10, "the dropped results to go"
        )


def test_asyncio_run_in_executor_100_calls():
    async def main(pool):
        loop = asyncio.get_running_loop()
        return await asyncio.gather(*(loop.run_in_executor(pool, pow, x, 2) for x in range(100)))

    with Executor(2) as pool:
        assert asyncio.run(main(pool)) == [x * x for x in range(100)]


def test_parallel_runs_natively_on_the_executor(monkeypatch):
    from fastparallel.backends import external

    def not_used(*args):
        raise AssertionError("parallel(executor=fastparallel.Executor) wrapped its chunks")

    monkeypatch.setattr(external, "run_remote_chunk", not_used)
    with Executor(2) as pool:
        workers = set(parallel(h.getpid, range(20), executor=pool, chunksize=1))
        assert workers == set(pool.map(h.getpid, range(20))) or len(workers) <= 2
        assert parallel(lambda a, x: a + x, [1, 2], 10, executor=pool) == [11, 12]
        crash = parallel(
            h.crash_on, range(6), executor=pool, target=2, how="sigkill", return_exceptions=True
        )
        assert isinstance(crash[2], WorkerDiedError) and "item 2" in str(crash[2])
        assert [v for i, v in enumerate(crash) if i != 2] == [0, 1, 9, 16, 25]
        with pytest.raises(ZeroDivisionError, match="division"):
            parallel(divmod, [0, 1], 1, executor=pool)


def test_garbage_collection_stops_the_workers():
    pool = Executor(2)
    pids = set(pool.map(h.getpid, range(4)))
    manager = pool._executor_manager_thread
    del pool
    gc.collect()
    manager.join(30)
    assert not manager.is_alive()
    h.wait_gone(pids, 30, "the collected executor's workers")


def test_inner_threads_takes_parallels_own_option_path():
    # the pools read options.inner_threads for the executor's workers as for parallel()'s
    assert Executor(2, inner_threads=3)._manager.options.inner_threads == 3
    with pytest.raises(ValueError, match="inner_threads"):
        Executor(2, inner_threads=0)


def test_bad_arguments():
    with pytest.raises(ValueError, match="max_workers must be greater than 0"):
        Executor(0)
    with pytest.raises(ValueError, match="threadpool=True"):
        Executor(2, threadpool=True, method="spawn")
    with pytest.raises(TypeError):
        Executor(2).submit()


# -- scripts: no __main__ guard, interpreter exit, Ctrl-C ---------------------------------


def test_a_notebook_style_script_submits_a_lambda(tmp_path):
    script = (
        "import fastparallel\n"
        "pool = fastparallel.Executor(2)\n"
        "print(pool.submit(lambda x: x * 2, 21).result(), sorted(pool.map(lambda x: -x, [1, 2])))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        check=False,
        text=True,
        timeout=60,
        env=h.script_env(),
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["42", "[-2,", "-1]"]
    assert not out.stderr


def test_at_exit_submitted_work_finishes_and_later_submits_fail(tmp_path):
    body = """
    import atexit
    pool = fastparallel.Executor(2)
    @atexit.register
    def late():  # runs after the executor's exit hook
        try:
            pool.submit(id, None)
        except RuntimeError as exc:
            print("refused:", exc)
    def slow_print(path, text):
        h.wait_for(lambda: os.path.exists(path), 60, path)
        print(text, flush=True)
    pool.submit(h.mark, str(OUT), "started").result()
    pool.submit(slow_print, str(OUT / "item-started"), "apple")
    pool.shutdown(wait=False)
    """
    done = h.run_script(tmp_path, body, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:2] == [
        "apple",
        "refused: cannot schedule new futures after interpreter shutdown",
    ]


def test_ctrl_c_during_map_stops_the_workers_within_a_second(tmp_path):
    body = """
    import functools
    pool = fastparallel.Executor(2)
    block = functools.partial(h.mark_then_block, marks=str(OUT), seconds=60)
    for x in pool.map(block, range(10)):
        pass
    """
    proc = h.start_script(tmp_path, body)
    try:
        marks = h.wait_marks(tmp_path, 2)
        pids = {m["pid"] for m in marks.values()}
        os.kill(proc.pid, signal.SIGINT)
        proc.wait(30)
        gone_after = h.wait_gone(pids, 30, "the workers after Ctrl-C")
        h.record_timing("executor: workers gone after Ctrl-C in map", gone_after)
        assert proc.returncode != 0
        stderr = (tmp_path / "stderr.txt").read_text()
        assert "KeyboardInterrupt" in stderr and "broken" not in stderr, stderr
        assert not h.session_pids(proc.pid)  # nothing left: no template, no worker
    finally:
        h.kill_session(proc.pid)


def test_public_name():
    assert fastparallel.Executor is Executor
    assert "Executor" in dir(fastparallel)
