"""inner_threads: the native thread pools (BLAS, OpenMP...) of each worker process are
sized to the CPUs shared out among the workers, the caller's environment wins, and an
explicit inner_threads wins over both."""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import inner_threads_helpers as th
import pytest

from fastparallel import num_cpus, parallel, shutdown
from fastparallel.backends.native_threads import VARIABLES, limit_loaded, worker_variables

pytestmark = pytest.mark.integration

np = pytest.importorskip("numpy")
threadpoolctl = pytest.importorskip("threadpoolctl")


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch):
    """Neither the caller's thread variables nor warm workers from an earlier test."""
    for name in VARIABLES:
        monkeypatch.delenv(name, raising=False)
    shutdown()
    yield
    shutdown()


def pools(results: list[dict[str, int]]) -> set[int]:
    """Every native pool's thread count, over every worker's report."""
    assert all(results), "no native thread pool was loaded"
    return {threads for report in results for threads in report.values()}


@pytest.mark.timeout(120)
@pytest.mark.parametrize("n_workers", [1, 2])
def test_by_default_each_worker_gets_its_share_of_the_cpus(n_workers):
    expected = max(1, num_cpus() // n_workers)
    fresh = parallel(th.matmul_threads, range(2 * n_workers), n_workers=n_workers)
    assert pools(fresh) == {expected}  # set in the environment before NumPy loaded
    # warm workers of an earlier call with another share: resized at run time
    other = 1 if expected > 1 else 2
    resized = parallel(th.matmul_threads, range(2), n_workers=n_workers, inner_threads=other)
    assert pools(resized) == {other}
    again = parallel(th.matmul_threads, range(2 * n_workers), n_workers=n_workers)
    assert pools(again) == {expected}


@pytest.mark.timeout(120)
def test_the_callers_omp_num_threads_wins(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    # OpenBLAS takes at most the machine's CPUs from its environment when it loads in the
    # worker; threadpoolctl sets 3 where the template had loaded it (the caller imported NumPy)
    taken = pools(parallel(th.matmul_threads, range(4), n_workers=2))
    assert taken in ({3}, {min(3, num_cpus())}), taken
    assert parallel(th.environment, range(1), n_workers=2)[0]["MKL_NUM_THREADS"] == "3"


@pytest.mark.timeout(120)
def test_inner_threads_given_wins_over_the_environment(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert pools(parallel(th.matmul_threads, range(4), n_workers=2, inner_threads=2)) == {2}
    env = parallel(th.environment, range(1), n_workers=2, inner_threads=2)[0]
    assert env == {"OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2"}


@pytest.mark.timeout(120)
def test_workers_forked_from_a_caller_that_loaded_numpy_are_resized():
    # NumPy is loaded here, its pools sized to the machine: a forked worker inherits them
    before = pools([th.matmul_threads(0)])
    results = parallel(th.matmul_threads, range(4), n_workers=2, method="fork")
    assert pools(results) == {max(1, num_cpus() // 2)}
    assert pools([th.matmul_threads(0)]) == before  # the caller's own pools are untouched


@pytest.mark.timeout(120)
@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="threads are counted in /proc")
def test_a_worker_forked_from_a_caller_that_loaded_numpy_starts_no_openblas_threads():
    # Sizing OpenBLAS in a forked child restarts all its threads (the fork had stopped
    # them), which spin for ~0.1 s: fastai's verify_images ran its first items at half
    # speed. They are stopped again; the size set stays until a BLAS call needs threads.
    # method="fork": always a fork of this process (the default forks it only while no
    # other thread runs here, and the template's workers never loaded NumPy).
    th.matmul_threads(0)  # the caller's own pool has run
    method = "fork"
    reports = parallel(th.native_threads_started, range(4), n_workers=2, method=method)
    share = max(1, num_cpus() // 2)
    assert [started for started, _ in reports] == [0, 0, 0, 0], reports
    assert all(sizes.get("openblas") == share for _, sizes in reports), reports
    assert pools(parallel(th.matmul_threads, range(2), n_workers=2, method=method)) == {share}


@pytest.mark.timeout(120)
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the caller is forked on Linux")
def test_the_default_forks_a_fresh_program_with_numpy_and_starts_no_openblas_threads():
    # A fresh interpreter runs no other thread, so the default forks it (the INFO line
    # says so): its list of native pools is made once and inherited by both workers.
    code = (
        "import logging, sys\nsys.path.insert(0, sys.argv[1])\n"
        "logging.basicConfig(level=logging.INFO, format='%(message)s')\n"
        "import inner_threads_helpers as th\nfrom fastparallel import parallel\n"
        "th.matmul_threads(0)\n"
        "print(parallel(th.native_threads_started, range(4), n_workers=2))\n"
    )
    here = os.path.dirname(os.path.abspath(__file__))
    command = [sys.executable, "-c", code, here]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert "workers start as fork of the caller" in done.stderr, done.stderr
    share = max(1, num_cpus() // 2)
    assert done.stdout.strip() == str([(0, {"openblas": share})] * 4), done.stdout


@pytest.mark.timeout(120)
def test_threads_are_left_alone_unless_inner_threads_is_given():
    before = pools([th.matmul_threads(0)])
    assert pools(parallel(th.matmul_threads, range(2), n_workers=2, threadpool=True)) == before
    during = parallel(th.matmul_threads, range(2), n_workers=2, threadpool=True, inner_threads=1)
    assert pools(during) == {1}
    assert pools([th.matmul_threads(0)]) == before  # restored after the call


@pytest.mark.timeout(120)
def test_inner_threads_on_threads_reaches_openmp_in_each_pool_thread():
    pytest.importorskip("sklearn")
    import sklearn.ensemble  # noqa: F401  loads an OpenMP runtime here, whose count is per thread

    during = parallel(th.matmul_threads, range(4), n_workers=2, threadpool=True, inner_threads=1)
    assert pools(during) == {1}


@pytest.mark.unit
def test_inner_threads_is_checked_and_refused_with_an_executor():
    with ThreadPoolExecutor(1) as executor, pytest.raises(ValueError, match="inner_threads"):
        parallel(abs, [1], executor=executor, inner_threads=2)
    for bad in (0, -1, 1.5, "2"):
        with pytest.raises((TypeError, ValueError), match="inner_threads"):
            parallel(abs, [1], inner_threads=bad)


@pytest.mark.unit
def test_worker_variables_and_nothing_loaded():
    assert set(worker_variables(None, 4, {})) == set(VARIABLES)
    assert set(worker_variables(None, 4, {}).values()) == {"4"}
    mixed = worker_variables(None, 4, {"OPENBLAS_NUM_THREADS": "2"})
    assert mixed["OPENBLAS_NUM_THREADS"] == "2" and mixed["OMP_NUM_THREADS"] == "4"
    assert limit_loaded({}) is None  # nothing to apply
    assert os.environ.get("OMP_NUM_THREADS") is None  # nothing here was changed


@pytest.mark.unit
def test_the_native_pools_listed_before_a_fork_serve_the_worker(monkeypatch):
    # The process that forks workers lists the loaded pools once (threadpoolctl walks every
    # loaded library: 3 to 11 ms with PyTorch); a worker uses the list it inherited,
    # until imports may have loaded more libraries.
    from fastparallel.backends import native_threads

    surveyed = native_threads.survey_native_pools()
    assert surveyed is not None and surveyed.select(internal_api="openblas").lib_controllers

    def no_walk(self: object) -> None:
        raise AssertionError("the libraries were walked again")

    monkeypatch.setattr(threadpoolctl.ThreadpoolController, "__init__", no_walk)
    limiters = limit_loaded({"OPENBLAS_NUM_THREADS": "1"})
    try:
        assert limiters  # sized through the listed pools
    finally:
        for limiter in limiters or ():
            limiter.restore_original_limits()
    # modules imported since (both fields come back afterwards, for the tests that follow)
    monkeypatch.setattr(native_threads._survey, "controller", surveyed)
    monkeypatch.setattr(native_threads._survey, "modules", -1)
    assert limit_loaded({"OPENBLAS_NUM_THREADS": "1"}) is None  # walked again: refused here
