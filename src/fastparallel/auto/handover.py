"""The probe's batches handed to the dispatcher: an outcome source like any backend.

With ``threadpool="auto"``, the chunks the probe ran, and the ones it still runs, come
first in the dispatcher's input (:attr:`.choose.Handoff.chunks`). The dispatcher
submits them as it submits any chunk, to :class:`HandedOver`: the chosen backend with
the probe beside it. A chunk of the probe's is not run again: its outcome, kept or
still to come from a probe thread, is what the dispatcher's next poll returns; every
other chunk goes to the chosen backend. So the dispatcher counts the probe's batches
as in flight, handles their results, errors and retries as any others, and knows
nothing of the probe.

Nothing polls. While the chosen backend holds chunks, a poll blocks on it (as long as
the dispatcher asks) and then takes whatever the probe finished meanwhile; once it
holds none, a poll blocks on the probe's queue. The probe's items are at the head of
the input, so a result it finishes while the backend is busy is at worst noticed with
the backend's next outcome.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastparallel.backends.base import Backend, Chunk, Measured, Outcome, Started
from fastparallel.backends.runner import Call

if TYPE_CHECKING:
    from fastparallel.auto.probe import Probe
    from fastparallel.options import Options

__all__ = ["HandedOver"]


class HandedOver:
    """``inner``, the chosen backend, plus the outcomes of ``probe``'s chunks."""

    def __init__(self, inner: Backend, probe: Probe):
        self.inner = inner
        self.probe = probe
        self.chunks_per_worker = inner.chunks_per_worker
        self.short_chunks_per_worker = getattr(inner, "short_chunks_per_worker", 0)
        self.reports_starts = inner.reports_starts
        self.runs_on_poll = inner.runs_on_poll
        self._arrived: dict[int, Outcome] = {o.chunk.id: o for o in probe.finished}
        self._probes: set[int] = set(self._arrived) | {c.id for c in probe.running}
        self._submitted: dict[
            int, None
        ] = {}  # the probe's chunks submitted, in order, no outcome yet
        self._mine: set[int] = set()  # chunks submitted to ``inner``, no outcome yet

    def begin(self, call: Call, n_workers: int, options: Options) -> Measured | None:
        return self.inner.begin(call, n_workers, options)

    def submit(self, chunk: Chunk) -> None:
        if chunk.id in self._probes:
            self._probes.discard(chunk.id)
            self._submitted[chunk.id] = None
            return
        self._mine.add(chunk.id)
        self.inner.submit(chunk)

    def poll(self, timeout: float | None) -> list[Outcome]:
        ready = self._ready(0.0)
        if self._mine:
            outcomes = self._track(self.inner.poll(0.0 if ready else timeout))
            return ready + self._ready(0.0) + outcomes
        if ready or not self._submitted:
            return ready
        return self._ready(timeout)  # only the probe's batches run: wait for them

    def _ready(self, timeout: float | None) -> list[Outcome]:
        """The outcomes of submitted probe chunks, waiting up to ``timeout`` for the probe."""
        for outcome in self.probe.late(timeout):
            self._arrived[outcome.chunk.id] = outcome
        return self._take([i for i in self._submitted if i in self._arrived])

    def _take(self, ids: list[int]) -> list[Outcome]:
        for chunk_id in ids:
            del self._submitted[chunk_id]
        return [self._arrived.pop(chunk_id) for chunk_id in ids]

    def _track(self, outcomes: list[Outcome]) -> list[Outcome]:
        for outcome in outcomes:
            if not isinstance(outcome, Started):
                self._mine.discard(outcome.chunk.id)
        return outcomes

    def item_deadline(self) -> float | None:
        deadlines = [self.probe.deadline(), self.inner.item_deadline() if self._mine else None]
        return min((d for d in deadlines if d is not None), default=None)

    def expire(self, now: float) -> list[Outcome]:
        for outcome in self.probe.overdue(now):
            self._arrived[outcome.chunk.id] = outcome
        outcomes = self._take([i for i in self._submitted if i in self._arrived])
        if self._mine:
            outcomes += self._track(self.inner.expire(now))
        return outcomes

    def abort(self) -> None:
        self.probe.abandon()
        if self._mine:
            self.inner.abort()

    def end(self) -> None:
        self.inner.end()

    # The pool registry keeps ``inner``, never this wrapper; these only complete the protocol.
    @property
    def reusable(self) -> bool:
        return self.inner.reusable

    def shutdown(self) -> None:
        self.inner.shutdown()

    def kill_at_exit(self) -> None:
        self.inner.kill_at_exit()
