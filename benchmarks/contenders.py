"""The libraries fastparallel is compared with, as a registry of :class:`Contender`.

Each contender knows how to open a :class:`~benchmarks.core.Session` for a mode. Libraries are
imported only when a session factory is loaded, so a child imports just the one it measures
(and the import is outside the timed region; import cost has its own workload).
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .core import Job, Mode, Session, SessionFactory

NO_WARM_POOL = "no persistent pool: every call starts a new one, so a warm call is a cold call"


@dataclass(frozen=True)
class Contender:
    """One way of mapping a function over items."""

    name: str
    label: str
    """How the tables name it."""
    load: Callable[[], SessionFactory]
    """Imports the library and returns the session factory."""
    apis: Mapping[str, str]
    """The API used in each supported mode, e.g. ``{"process": "Pool.map"}``."""
    unsupported: Mapping[str, str] = field(default_factory=dict)
    """Why a mode is not measured."""
    keeps_pool: bool = True
    """Whether workers can outlive a call, which makes a warm call cheaper than a cold one."""
    progress: bool = False
    """Whether it can show a progress bar."""
    import_stmt: str | None = None
    """What a user imports to use it (for the import-time workload)."""
    only_in: tuple[str, ...] | None = None
    """The workloads it is measured in (None: all of them)."""

    def skip_reason(self, mode: str) -> str | None:
        if mode in self.apis:
            return None
        return self.unsupported.get(mode, f"no {mode} mode")


# --- session factories ------------------------------------------------------------------------


def _load_serial() -> SessionFactory:
    class SerialSession(Session):
        def map(self, job: Job) -> list[Any]:
            return [job.fn(item, **job.kwargs) for item in job.items]

    return SerialSession


def _load_fastparallel(
    method: str | None = None,
    threadpool: str | None = None,
    inner_threads: int | None = None,
) -> SessionFactory:
    from fastparallel import parallel, shutdown

    class FastparallelSession(Session):
        def map(self, job: Job) -> list[Any]:
            return list(
                parallel(
                    job.fn,
                    job.items,
                    n_workers=self.n_workers,
                    threadpool=self.threads if threadpool is None else threadpool,
                    progress=job.progress,
                    method=method,
                    inner_threads=inner_threads,
                    **job.kwargs,
                )
            )

        def close(self) -> None:
            shutdown()

    return FastparallelSession


def _load_fastparallel_async() -> SessionFactory:
    import asyncio

    from fastparallel import parallel_async

    class FastparallelAsyncSession(Session):
        def map(self, job: Job) -> list[Any]:
            return asyncio.run(
                parallel_async(job.fn, job.items, n_workers=self.n_workers, **job.kwargs)
            )

    return FastparallelAsyncSession


def _load_asyncio() -> SessionFactory:
    import asyncio

    class GatherSession(Session):
        """``asyncio.gather`` over every item, a semaphore keeping ``n_workers`` in flight."""

        def map(self, job: Job) -> list[Any]:
            async def run_all() -> list[Any]:
                slots = asyncio.Semaphore(self.n_workers)

                async def one(item: Any) -> Any:
                    async with slots:
                        return await job.fn(item, **job.kwargs)

                return list(await asyncio.gather(*(one(item) for item in job.items)))

            return asyncio.run(run_all())

    return GatherSession


def _load_fastcore() -> SessionFactory:
    import asyncio

    from fastcore.parallel import parallel, parallel_async

    class FastcoreSession(Session):
        def map(self, job: Job) -> list[Any]:
            if self.mode == "async":
                return list(
                    asyncio.run(
                        parallel_async(job.fn, job.items, n_workers=self.n_workers, **job.kwargs)
                    )
                )
            return list(
                parallel(
                    job.fn,
                    job.items,
                    n_workers=self.n_workers,
                    threadpool=self.threads,
                    progress=job.progress,
                    **job.kwargs,
                )
            )

    return FastcoreSession


def _load_mpire() -> SessionFactory:
    from mpire import WorkerPool  # type: ignore[attr-defined]

    class MpireSession(Session):
        def __init__(self, mode: Mode, n_workers: int) -> None:
            super().__init__(mode, n_workers)
            method = "threading" if self.threads else "fork"
            self.pool = WorkerPool(n_jobs=n_workers, start_method=method, keep_alive=True)

        def map(self, job: Job) -> list[Any]:
            return list(
                self.pool.map(
                    job.bound, job.items, progress_bar=job.progress, concatenate_numpy_output=False
                )
            )

        def close(self) -> None:
            self.pool.terminate()

    return MpireSession


def _load_joblib() -> SessionFactory:
    from joblib import Parallel, delayed

    class JoblibSession(Session):
        def __init__(self, mode: Mode, n_workers: int) -> None:
            super().__init__(mode, n_workers)
            prefer = "threads" if self.threads else "processes"
            self.parallel = Parallel(n_jobs=n_workers, prefer=prefer)
            self.parallel.__enter__()

        def map(self, job: Job) -> list[Any]:
            return list(self.parallel(delayed(job.fn)(item, **job.kwargs) for item in job.items))

        def close(self) -> None:
            self.parallel.__exit__(None, None, None)

    return JoblibSession


def _load_mp_pool(method: str | None) -> SessionFactory:
    from multiprocessing.pool import Pool, ThreadPool

    class PoolSession(Session):
        def __init__(self, mode: Mode, n_workers: int) -> None:
            super().__init__(mode, n_workers)
            self.pool: Pool
            if self.threads:
                self.pool = ThreadPool(n_workers)
            else:
                self.pool = multiprocessing.get_context(method).Pool(n_workers)

        def map(self, job: Job) -> list[Any]:
            return self.pool.map(job.bound, job.items)

        def close(self) -> None:
            self.pool.terminate()
            self.pool.join()

    return PoolSession


def _load_futures(method: str | None = None) -> SessionFactory:
    from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor

    class FuturesSession(Session):
        def __init__(self, mode: Mode, n_workers: int) -> None:
            super().__init__(mode, n_workers)
            self.executor: Executor
            if self.threads:
                self.executor = ThreadPoolExecutor(n_workers)
            else:
                context = None if method is None else multiprocessing.get_context(method)
                self.executor = ProcessPoolExecutor(n_workers, mp_context=context)

        def map(self, job: Job) -> list[Any]:
            return list(self.executor.map(job.bound, job.items))

        def close(self) -> None:
            self.executor.shutdown()

    return FuturesSession


def _load_loky() -> SessionFactory:
    from loky import get_reusable_executor

    class LokySession(Session):
        def __init__(self, mode: Mode, n_workers: int) -> None:
            super().__init__(mode, n_workers)
            self.executor = get_reusable_executor(max_workers=n_workers)

        def map(self, job: Job) -> list[Any]:
            return list(self.executor.map(job.bound, job.items))

        def close(self) -> None:
            self.executor.shutdown()

    return LokySession


def _load_tqdm() -> SessionFactory:
    from tqdm.contrib.concurrent import process_map, thread_map

    class TqdmSession(Session):
        def map(self, job: Job) -> list[Any]:
            run = thread_map if self.threads else process_map
            return list(
                run(job.bound, job.items, max_workers=self.n_workers, disable=not job.progress)
            )

    return TqdmSession


# --- the registry -----------------------------------------------------------------------------

DEFAULT_METHOD = multiprocessing.get_start_method()
FORKSERVER_WORKLOADS = ("tiny_cold", "script", "endtoend", "batches", "heavy_import")
"""Where the forkserver-based standard-library pools (the defaults from Python 3.14) are measured."""

AUTO_WORKLOADS = ("cpu", "sleep", "batches")
"""Where ``threadpool="auto"`` is measured against the mode that suits the work."""

INNER_WORKLOADS = ("inner",)
"""Where fastparallel without its limit on the native thread pools is measured."""

CONTENDERS: dict[str, Contender] = {
    c.name: c
    for c in [
        Contender(
            name="serial",
            label="serial loop",
            load=_load_serial,
            apis={"serial": "[fn(x) for x in items]"},
        ),
        Contender(
            name="fastparallel",
            label="fastparallel",
            load=_load_fastparallel,
            apis={
                "process": "parallel(fn, items)",
                "thread": "parallel(fn, items, threadpool=True)",
                "async": "parallel(async_fn, items, n_workers=k)",
            },
            progress=True,
            import_stmt="from fastparallel import parallel",
        ),
        Contender(
            name="fastparallel_async",
            label="fastparallel.parallel_async",
            load=_load_fastparallel_async,
            apis={"async": "await parallel_async(async_fn, items, n_workers=k)"},
        ),
        Contender(
            name="fastparallel_fork",
            label="fastparallel (method='fork')",
            load=lambda: _load_fastparallel("fork"),
            apis={"process": "parallel(fn, items, method='fork')"},
            unsupported={"thread": "the start method only concerns processes"},
            keeps_pool=False,
        ),
        Contender(
            name="fastparallel_auto",
            label="fastparallel (threadpool='auto')",
            load=lambda: _load_fastparallel(threadpool="auto"),
            apis={
                "process": "parallel(fn, items, threadpool='auto')",
                "thread": "parallel(fn, items, threadpool='auto')",
            },
            only_in=AUTO_WORKLOADS,
        ),
        Contender(
            name="fastparallel_oversubscribed",
            label="fastparallel (inner_threads=cpus: no limit)",
            load=lambda: _load_fastparallel(inner_threads=os.cpu_count() or 1),
            apis={"process": "parallel(fn, items, inner_threads=os.cpu_count())"},
            unsupported={"thread": "threads are left alone unless inner_threads is given"},
            only_in=INNER_WORKLOADS,
        ),
        Contender(
            name="fastcore",
            label="fastcore.parallel",
            load=_load_fastcore,
            apis={
                "process": "parallel(fn, items)",
                "thread": "parallel(fn, items, threadpool=True)",
                "async": "await parallel_async(async_fn, items, n_workers=k)",
            },
            keeps_pool=False,
            progress=True,
            import_stmt="from fastcore.parallel import parallel",
        ),
        Contender(
            name="mpire",
            label="mpire",
            load=_load_mpire,
            apis={
                "process": "WorkerPool(start_method='fork').map",
                "thread": "WorkerPool(start_method='threading').map",
            },
            progress=True,
            import_stmt="from mpire import WorkerPool",
        ),
        Contender(
            name="joblib",
            label="joblib",
            load=_load_joblib,
            apis={
                "process": "Parallel(n_jobs)(delayed(fn)(x) ...) (loky)",
                "thread": "Parallel(n_jobs, prefer='threads')(...)",
            },
            import_stmt="from joblib import Parallel, delayed",
        ),
        Contender(
            name="mp_pool_fork",
            label="multiprocessing.Pool (fork)",
            load=lambda: _load_mp_pool("fork"),
            apis={
                "process": "get_context('fork').Pool().map",
                "thread": "multiprocessing.pool.ThreadPool().map",
            },
            import_stmt="import multiprocessing.pool",
        ),
        Contender(
            name="mp_pool_default",
            label=f"multiprocessing.Pool (default: {DEFAULT_METHOD})",
            load=lambda: _load_mp_pool(None),
            apis={"process": f"Pool().map (start method {DEFAULT_METHOD})"},
            unsupported={"thread": "its thread pool is the ThreadPool measured under mp_pool_fork"},
        ),
        Contender(
            name="mp_pool_forkserver",
            label="multiprocessing.Pool (forkserver)",
            load=lambda: _load_mp_pool("forkserver"),
            apis={"process": "get_context('forkserver').Pool().map (the default from Python 3.14)"},
            unsupported={"thread": "its thread pool is the ThreadPool measured under mp_pool_fork"},
            only_in=FORKSERVER_WORKLOADS,
        ),
        Contender(
            name="futures",
            label="concurrent.futures",
            load=_load_futures,
            apis={"process": "ProcessPoolExecutor().map", "thread": "ThreadPoolExecutor().map"},
            import_stmt="import concurrent.futures",
        ),
        Contender(
            name="futures_forkserver",
            label="ProcessPoolExecutor (forkserver)",
            load=lambda: _load_futures("forkserver"),
            apis={
                "process": "ProcessPoolExecutor(mp_context=get_context('forkserver')).map "
                "(the default from Python 3.14)"
            },
            unsupported={
                "thread": "its thread pool is the ThreadPoolExecutor measured under futures"
            },
            only_in=FORKSERVER_WORKLOADS,
        ),
        Contender(
            name="loky",
            label="loky",
            load=_load_loky,
            apis={"process": "get_reusable_executor().submit / .map"},
            unsupported={"thread": "loky has processes only"},
            import_stmt="from loky import get_reusable_executor",
            only_in=("submit",),
        ),
        Contender(
            name="tqdm",
            label="tqdm.contrib.concurrent",
            load=_load_tqdm,
            apis={
                "process": "process_map(fn, items, disable=True)",
                "thread": "thread_map(fn, items, disable=True)",
            },
            keeps_pool=False,
            progress=True,
            import_stmt="from tqdm.contrib.concurrent import process_map",
        ),
        Contender(
            name="asyncio",
            label="asyncio.gather + Semaphore",
            load=_load_asyncio,
            apis={"async": "await gather(*(limited(fn(x)) for x in items)), Semaphore(k)"},
        ),
    ]
}

REFERENCE = "fastparallel"
"""The contender every ratio is taken against."""


def default_workers() -> int:
    return os.cpu_count() or 1
