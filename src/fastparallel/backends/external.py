"""Running chunks on an executor you already have: a Dask cluster, or any ``concurrent.futures.Executor``.

``parallel(fn, items, executor=client)`` keeps the behaviour of the local pools
(chunking, input order, ``return_as``, progress, ``return_exceptions``, errors naming
the item) and only changes where chunks run. With a ``dask.distributed.Client``:

* ``fn``, ``args`` and ``kwargs`` are pickled once and scattered to the workers once
  (``broadcast=True``), not shipped with every chunk;
* every chunk is submitted with ``pure=False``, so that Dask does not merge two chunks
  that happen to look the same.

A worker deserializes a call's ``fn`` once and caches it by a per-call token.
"""

from __future__ import annotations

import queue
import uuid
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

from fastparallel.backends.base import Chunk, Done, Outcome, PoolSpec, Split, wait_and_drain
from fastparallel.backends.processes.wire.protocol import decode_result
from fastparallel.backends.processes.worker import run_packed
from fastparallel.backends.runner import Call
from fastparallel.cpus import num_cpus
from fastparallel.errors import RemoteError, describe_item, short_repr
from fastparallel.serialize.pickling import dumps, loads

if TYPE_CHECKING:
    from fastparallel.options import Options

__all__ = ["ExecutorBackend", "executor_workers", "is_dask_client", "pool_spec", "run_remote_chunk"]

_cached_calls: OrderedDict[str, Call | BaseException] = OrderedDict()


def run_remote_chunk(
    token: str, payload: bytes, items_blob: bytes, start: int, stop_on_error: bool
) -> tuple[bytes, float]:
    """Runs on the executor's worker: one chunk, results packed like a local worker's."""
    call = _cached_calls.get(token)
    if call is None:
        try:
            call = Call(*loads(payload))
        except BaseException as exc:
            call = exc
        _cached_calls[token] = call
        while len(_cached_calls) > 4:
            _cached_calls.popitem(last=False)
    return run_packed(call, loads(items_blob), start, stop_on_error)


def is_dask_client(executor: Any) -> bool:
    return type(executor).__module__.startswith("distributed") and hasattr(executor, "scatter")


def executor_workers(executor: Any) -> int:
    """How many chunks the executor can run at once (the default ``n_workers``)."""
    if is_dask_client(executor):
        try:
            return max(1, int(sum(executor.nthreads().values())))
        except Exception:
            return num_cpus()
    count = getattr(executor, "_max_workers", None)
    return count if isinstance(count, int) and count > 0 else num_cpus()


class ExecutorBackend:
    """Submits chunks to ``executor`` and collects them through done-callbacks."""

    chunks_per_worker = 4  # a cluster round trip takes milliseconds: keep more queued
    reusable = False  # a wrapper for one call; the executor itself is the user's to keep
    # Its workers' clocks may not compare with ours: pause spaces submissions.
    reports_starts = False
    runs_on_poll = False

    def __init__(self, executor: Any):
        self._executor = executor
        self._dask = is_dask_client(executor)
        # fastparallel.Executor runs a chunk as its own (its future's result is the chunk's
        # Outcome): no second wrapping of the call, no packed results.
        self._native: Any = getattr(executor, "_fastparallel_run_chunk", None)
        self._call: Call | None = None
        self._done: queue.SimpleQueue[tuple[Chunk, Any]] = queue.SimpleQueue()
        self._futures: dict[int, Any] = {}
        self._stop_on_error = True
        self._token = ""
        self._payload: Any = None

    def begin(self, call: Call, n_workers: int, options: Options) -> None:
        self._stop_on_error = options.stop_chunk_on_error
        if self._native is not None:
            self._call = call
            return
        self._token = uuid.uuid4().hex
        payload = dumps(tuple(call))
        # On Dask, send the pickled call to every worker once; chunks refer to it.
        self._payload = (
            self._executor.scatter(payload, broadcast=True, hash=False) if self._dask else payload
        )

    def submit(self, chunk: Chunk) -> None:
        if self._native is not None:
            assert self._call is not None
            self._track(chunk, self._native(self._call, chunk))
            return
        args = (self._token, self._payload, dumps(chunk.items), chunk.start, self._stop_on_error)
        if self._dask:
            future = self._executor.submit(run_remote_chunk, *args, pure=False)
        else:
            future = self._executor.submit(run_remote_chunk, *args)
        self._track(chunk, future)

    def _track(self, chunk: Chunk, future: Any) -> None:
        self._futures[chunk.id] = future
        future.add_done_callback(lambda f, chunk=chunk: self._done.put((chunk, f)))

    def poll(self, timeout: float | None) -> list[Outcome]:
        outcomes: list[Outcome] = []
        for chunk, future in wait_and_drain(self._done, timeout):
            if self._futures.pop(chunk.id, None) is None:
                continue  # cancelled by abort()
            outcomes.append(self._outcome(chunk, future))
        return outcomes

    def _outcome(self, chunk: Chunk, future: Any) -> Outcome:
        try:
            if self._native is not None:
                outcome: Outcome = future.result()
                return outcome
            body, seconds = future.result()
        except BaseException as exc:  # the executor itself failed: a lost worker, a transport error
            error = RemoteError(
                f"the executor failed to run the chunk starting at "
                f"{describe_item(chunk.start, chunk.items[0])}: {short_repr(exc)}",
                type(exc).__name__,
            )
            error.__cause__ = exc
            count = 1 if self._stop_on_error else len(chunk.items)
            return Done(chunk, [None] * count, [(o, error) for o in range(count)], 0.0)
        result = decode_result(body, chunk, self._stop_on_error)
        if result is None:
            return Split(chunk)
        return Done(chunk, result.values, result.errors, seconds, result.nbytes)

    def item_deadline(self) -> None:
        return None  # item_timeout is refused with executor=

    def expire(self, now: float) -> list[Outcome]:
        return []

    def abort(self) -> None:
        futures = list(self._futures.values())
        self._futures.clear()
        if self._dask and futures:
            self._executor.cancel(futures)
        else:
            for future in futures:
                future.cancel()

    def end(self) -> None:
        self._futures.clear()
        self._payload = None
        self._call = None

    def shutdown(self) -> None:
        """Nothing of ours to stop: the executor is the user's, and goes on."""

    def kill_at_exit(self) -> None:
        """Nothing to do: the executor's workers are the user's."""


def pool_spec(options: Options) -> PoolSpec:
    """A new wrapper of ``options.executor`` for each call (the executor is the user's)."""
    return PoolSpec(None, lambda: ExecutorBackend(options.executor))
