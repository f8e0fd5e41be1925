"""What a workload is, and the cold/warm protocol shared by every map workload."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..contenders import NO_WARM_POOL, Contender, default_workers
from ..core import ChildContext, Job, Measurement, Params, Session


@dataclass
class Prepared:
    """A workload made ready in the child, outside the timed region.

    ``batches`` are run one after the other, one map call each; their results are joined and
    handed to ``check``. ``cleanup`` runs at the end whatever happened.
    """

    batches: list[Job]
    check: Callable[[list[Any]], bool]
    cleanup: Callable[[], None] = lambda: None
    extra: dict[str, Any] = field(default_factory=dict)
    """Measured while preparing, reported with the time (e.g. the machine's memcpy bandwidth)."""

    def run(self, session: Session) -> list[Any]:
        results: list[Any] = []
        for job in self.batches:
            results.extend(session.map(job))
        return results


@dataclass(frozen=True, kw_only=True)
class Workload:
    """A named benchmark: its variants (sizes), the modes it runs in, and how to measure it."""

    name: str
    title: str
    description: str
    modes: tuple[str, ...]
    variants: Mapping[str, Params]
    quick: Mapping[str, Params]
    serial: bool | str = True
    """Whether the serial loop is measured too, or why not."""
    contenders: tuple[str, ...] | None = None
    """Restricts the workload to these contenders (None: all of them)."""
    warm: bool = False
    """Time a second call after an untimed first one (True) or the first call (False)."""
    efficiency: bool = False
    """Report parallel efficiency across sizes that differ in their ``workers`` parameter."""
    sweep: str | None = None
    """The parameter (in MiB) its sizes vary, plotted as time per item against it."""

    def sizes(self, quick: bool) -> Mapping[str, Params]:
        return self.quick if quick else self.variants

    def skip_reason(self, contender: Contender, mode: str, params: Params) -> str | None:
        """Why ``contender`` is not measured in ``mode`` here, or None if it is."""
        reason = contender.skip_reason(mode)
        if reason is None and self.warm and not contender.keeps_pool:
            reason = NO_WARM_POOL
        if reason is None and params.get("progress") and not contender.progress:
            reason = "no progress bar"
        return reason

    def measure(self, ctx: ChildContext) -> Measurement:
        raise NotImplementedError


@dataclass(frozen=True, kw_only=True)
class MapWorkload(Workload):
    """A workload that maps a function over items with a contender's session."""

    prepare: Callable[[ChildContext], Prepared]

    def measure(self, ctx: ChildContext) -> Measurement:
        prepared = self.prepare(ctx)
        factory = ctx.contender.load()
        n_workers = int(ctx.params.get("workers") or default_workers())
        session: Session | None = None
        try:
            if self.warm:
                session = factory(ctx.mode, n_workers)
                prepared.run(session)
                start = time.perf_counter()
                results = prepared.run(session)
            else:
                start = time.perf_counter()
                session = factory(ctx.mode, n_workers)
                results = prepared.run(session)
            seconds = time.perf_counter() - start
        finally:
            if session is not None:
                session.close()
            prepared.cleanup()
        return Measurement(
            seconds=seconds, correct=bool(prepared.check(results)), extra=prepared.extra
        )


def single(job: Job, expected: list[Any]) -> Prepared:
    """One map call whose results must equal ``expected``."""
    return Prepared([job], check=lambda results: results == expected)


def batched(items: list[Any], size: int) -> list[list[Any]]:
    """Splits items into consecutive batches of ``size``."""
    return [items[i : i + size] for i in range(0, len(items), size)]
