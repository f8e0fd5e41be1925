"""parallel(..., executor=...) on a real dask.distributed LocalCluster (2 worker processes, loopback)."""

from __future__ import annotations

import os
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

from fastparallel import parallel

pytestmark = pytest.mark.integration

_ENVIRON = dict(os.environ)
distributed = pytest.importorskip("distributed")
# Importing distributed sets OMP_NUM_THREADS=1 and friends in this process's environment
# (meant for its worker processes), at collection, for every later test: put it back.
os.environ.clear()
os.environ.update(_ENVIRON)
dask = pytest.importorskip("dask")  # installed with distributed


@pytest.fixture(scope="module")
def client():
    environ = dict(os.environ)  # starting worker processes sets OMP_NUM_THREADS=1 here too
    # No statistical profiler (in this process and, through the nannies, in the workers): it
    # reads other threads' frames every 10 ms, which crashed the free-threaded 3.13t under
    # load (Bus error in distributed/profile.py), and it takes CPU a busy machine lacks.
    with dask.config.set({"distributed.worker.profile.enabled": False}):
        cluster = distributed.LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
        )
        client = distributed.Client(cluster)
        yield client
        client.close()
        cluster.close()
    os.environ.clear()
    os.environ.update(environ)


def square(x):
    return x * x


def fail_on_three(x):
    if x == 3:
        raise KeyError("three")
    return x


def token(_):
    return uuid.uuid4().hex, os.getpid()


def scaled(x, factor=1, big=b""):
    return x * factor + len(big)


@pytest.mark.timeout(180)
def test_results_in_order_with_args_and_kwargs(client):
    assert parallel(scaled, range(20), executor=client, factor=3) == [3 * x for x in range(20)]
    assert parallel(lambda a, x: a + x, [1, 2, 3], 10, executor=client) == [11, 12, 13]


def test_runs_on_the_cluster_workers(client):
    pids = {pid for _, pid in parallel(token, range(40), executor=client, chunksize=1)}
    worker_pids = set(client.run(os.getpid).values())
    assert pids <= worker_pids and os.getpid() not in pids


def test_identical_items_are_not_merged(client):
    # Dask's pure=True default would compute identical calls once; each item must run.
    out = parallel(token, [7] * 12, executor=client, chunksize=1)
    assert len({tok for tok, _ in out}) == 12


def test_chunking_and_progress(client):
    calls = []
    out = parallel(square, range(5000), executor=client, progress=lambda d, t: calls.append((d, t)))
    assert out == [x * x for x in range(5000)]
    assert calls[-1] == (5000, 5000)
    assert len(calls) < 200  # chunked: not one task per item


def test_return_as_generators(client):
    assert list(
        parallel(square, (i for i in range(30)), executor=client, return_as="generator")
    ) == [x * x for x in range(30)]
    out = parallel(square, range(30), executor=client, return_as="generator_unordered")
    assert sorted(out) == [x * x for x in range(30)]


def test_errors_name_the_item_and_keep_the_type(client):
    with pytest.raises(KeyError) as info:
        parallel(fail_on_three, range(10), executor=client)
    assert "item 3 (3)" in " ".join(info.value.__notes__)
    assert "fail_on_three" in str(info.value.__cause__)
    out = parallel(fail_on_three, range(6), executor=client, return_exceptions=True)
    assert isinstance(out[3], KeyError) and out[:3] == [0, 1, 2] and out[4:] == [4, 5]


class CountsUnpickling:
    """A 5 MB argument that appends a line to ``path`` each time it is unpickled."""

    pickled = 0

    def __init__(self, path, size):
        self.path, self.blob = path, b"x" * size

    def __len__(self):
        return len(self.blob)

    def __reduce__(self):
        CountsUnpickling.pickled += 1
        return (_unpickled, (self.path, len(self.blob)))


def _unpickled(path, size):
    with open(path, "a") as f:
        f.write(f"{os.getpid()}\n")
    return CountsUnpickling(path, size)


def test_large_argument_is_scattered_once(client, tmp_path):
    path = tmp_path / "unpickled"
    big = CountsUnpickling(str(path), 5_000_000)
    CountsUnpickling.pickled = 0
    out = parallel(scaled, range(200), executor=client, big=big, chunksize=1)
    assert out == [x + len(big) for x in range(200)]
    assert CountsUnpickling.pickled == 1  # pickled once for the whole call, not per chunk
    unpickled_in = path.read_text().split()
    assert len(unpickled_in) == len(set(unpickled_in)) <= 2  # at most once per worker process


def test_client_get_executor_and_plain_executors(client):
    assert parallel(square, range(10), executor=client.get_executor()) == [x * x for x in range(10)]
    with ThreadPoolExecutor(3) as pool:
        seen = parallel(lambda x: threading.get_ident(), range(30), executor=pool, chunksize=1)
        assert threading.get_ident() not in seen


def test_bad_executor_fails_early():
    with pytest.raises(TypeError, match="executor"):
        parallel(square, [1], executor=object())
