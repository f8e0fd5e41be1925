"""``advise(fn, items, ...)``: measure ``fn`` on a sample and predict serial, threads and processes.

It shares the probe (:mod:`.probe`), the measurements (:func:`.auto.measure`) and the cost
model (:mod:`.model`) with ``threadpool="auto"``, so it recommends what auto would choose
for the same measurements. It probes longer, and also times starting worker processes
(with ``fn`` unpickled in each, so its imports count) and a round trip to them, where
that fits in the time left.
"""

from __future__ import annotations

import html
import math
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Any, NamedTuple

from fastparallel import cpus
from fastparallel.auto.choose import measure, workers_for
from fastparallel.auto.explain import bytes_text, memory_text, reasons, seconds_text
from fastparallel.auto.model import (
    MODES,
    UNKNOWN_ITEMS,
    Measurements,
    StartCaveat,
    StartHow,
    StartSource,
    recommend,
)
from fastparallel.auto.probe import Probe
from fastparallel.backends.runner import Call, is_coroutine_function
from fastparallel.core.chunking import ChunkReader
from fastparallel.cpus import num_cpus
from fastparallel.options import Mode, Options, check_count, check_seconds

__all__ = ["Advice", "check_advise_arguments", "measure_advice"]

PROBE_SHARE = 0.6  # of max_seconds, spent running items; the rest times processes
_ROUND_TRIPS = 16  # chunks per worker sent to time a round trip


@dataclass(frozen=True, repr=False)
class Advice:
    """What :func:`advise` measured, predicted and recommends.

    Attributes:
        recommended: "serial", "threads" or "processes".
        predicted: predicted wall time, in seconds, of the whole input in each of the three
            modes (``math.inf`` for processes when the call cannot be pickled); for every
            1,000 items when the number of items is unknown.
        reasons: the reasons in plain words, the verdict last.
        measured: the measurements the predictions rest on (time per item and its
            spread, GIL share, cores, overlap, pickled sizes and times, start and round
            trip costs): a :class:`fastparallel.Measurements`.
        n_items: the number of items (``len(items)`` or ``total=``), None if unknown.
        n_workers: the workers each mode was predicted with (fewer than the CPUs allow
            where the items' memory does not fit more at once).
        seconds: how long ``advise()`` took.
        memory_per_item: the most this process grew by while the sample ran (its peak
            resident memory): an item's need, or more where items on the probe's two
            threads peaked together, so the advice errs on the side of memory; None where
            it cannot be read. (Measuring it resets this process's peak-RSS counter,
            ``VmHWM`` and ``ru_maxrss``, to its current RSS.)

    ``str(advice)`` is a short table with the reasons; in a notebook it shows as HTML.
    """

    recommended: Mode
    predicted: dict[Mode, float]
    reasons: tuple[str, ...]
    measured: Measurements
    n_items: int | None
    n_workers: dict[Mode, int]
    seconds: float
    memory_per_item: int | None = None

    def __repr__(self) -> str:
        predicted = {mode: round(seconds, 3) for mode, seconds in self.predicted.items()}
        return f"Advice(recommended={self.recommended!r}, predicted={predicted}, n_items={self.n_items})"

    def _rows(self) -> list[tuple[str, str, str, str]]:
        serial = self.predicted["serial"]
        rows: list[tuple[str, str, str, str]] = []
        for mode in MODES:
            seconds = self.predicted[mode]
            speedup = "-" if math.isinf(seconds) or seconds <= 0 else f"{serial / seconds:.1f}x"
            mark = "<- recommended" if mode == self.recommended else ""
            rows.append(
                (
                    mode,
                    str(self.n_workers[mode]),
                    seconds_text(seconds),
                    f"{speedup:>7}  {mark}".rstrip(),
                )
            )
        return rows

    def _title(self) -> str:
        m = self.measured
        count = (
            f"{self.n_items:,} items"
            if self.n_items is not None
            else "items of unknown number (per 1,000)"
        )
        return f"fastparallel.advise: {count}; {m.sampled:,} run in {self.seconds:.2f} s to measure"

    def _facts(self) -> str:
        m = self.measured
        facts = [
            f"{seconds_text(m.seconds_per_item)} per item",
            f"GIL held {m.gil:.0%}",
            f"{m.cores:.2f} cores busy per item",
        ]
        if m.overlap is not None:
            facts.append(f"2 threads {m.overlap:.1f}x one")
        if m.item is not None and m.result is not None:
            facts.append(
                f"item {bytes_text(m.item.nbytes)}, result {bytes_text(m.result.nbytes)} pickled"
            )
        facts.append(
            f"process start {seconds_text(m.start_seconds)}, round trip {seconds_text(m.round_trip)}"
        )
        if self.memory_per_item is not None:
            facts.append(f"memory {bytes_text(self.memory_per_item)} per item")
        return "; ".join(facts)

    def __str__(self) -> str:
        lines = [self._title(), f"{'mode':<10} {'workers':>7} {'predicted':>10}  speedup"]
        lines += [
            f"{mode:<10} {workers:>7} {seconds:>10}  {speedup}"
            for mode, workers, seconds, speedup in self._rows()
        ]
        lines.append(f"measured: {self._facts()}")
        lines += [f"- {reason}" for reason in self.reasons]
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        bold, right = ' style="font-weight:bold"', ' style="text-align:right"'
        rows = "".join(
            f"<tr{bold if mode == self.recommended else ''}><td>{mode}</td><td{right}>{workers}</td>"
            f"<td{right}>{html.escape(seconds)}</td><td>{html.escape(speedup)}</td></tr>"
            for mode, workers, seconds, speedup in self._rows()
        )
        items = "".join(f"<li>{html.escape(reason)}</li>" for reason in self.reasons)
        return (
            f"<div><p>{html.escape(self._title())}</p><table><thead><tr><th>mode</th><th>workers</th>"
            f"<th>predicted</th><th>speedup</th></tr></thead><tbody>{rows}</tbody></table>"
            f"<p><small>measured: {html.escape(self._facts())}</small></p><ul>{items}</ul></div>"
        )


def measure_advice(
    call: Call,
    items: Iterable[Any],
    options: Options,
    *,
    max_seconds: float,
    run: Callable[..., list[Any]],
    idle_pool: bool,
) -> Advice:
    """What :func:`fastparallel.advise` does, once its arguments are checked: probe ``call``
    on ``items``, time a real start of worker processes with ``run`` (``parallel``
    itself, handed down by the entry point) when ``idle_pool`` is false or anyway, and
    recommend a mode. ``options`` holds the keywords of ``parallel()`` that advise() takes
    (checked by :func:`check_advise_arguments`)."""
    began = time.monotonic()
    n_workers, total = options.n_workers, options.total
    if total is None:
        try:
            total = len(items)  # type: ignore[arg-type]
        except (TypeError, AttributeError):
            total = None
    workers = workers_for(n_workers)
    threads = 1 if num_cpus() == 1 or n_workers == 1 else 2
    probe = Probe(call, ChunkReader(iter(items)), threads=threads, stop_on_error=False)
    cpus.reset_peak_rss()  # the peak while the sample runs, not the process's lifetime
    before = cpus.rss(os.getpid())
    sample = probe.run(PROBE_SHARE * max_seconds)
    peak = cpus.peak_rss()
    probe.abandon()  # items still running go on in their threads; their results are not kept
    m = measure(call, probe.kept, sample, workers["processes"], idle_pool)
    m = _time_processes(m, call, workers["processes"], began + max_seconds, run, idle_pool)
    per_item = None
    if before is not None and peak is not None:
        # Not divided by the probe's threads: their items' peaks may or may not have
        # coincided (a busy machine runs them one after the other), and running out of
        # memory costs more than a worker too few.
        per_item = max(0, peak - before)
    fit = MemoryFit.of(per_item, options.max_memory, workers)
    n_items = total if total is not None else (sample.read if probe.exhausted else None)
    mode, predicted = recommend(m, n_items if n_items is not None else UNKNOWN_ITEMS, fit.workers)
    said = reasons(m, mode, predicted, n_items, fit.workers)
    if fit.limited:  # before the verdict, which comes last
        said.insert(-1, memory_text(fit.per_item, fit.budget, fit.workers, workers))
    return Advice(
        mode,
        predicted,
        tuple(said),
        m,
        n_items,
        fit.workers,
        time.monotonic() - began,
        per_item,
    )


class MemoryFit(NamedTuple):
    """How many items fit in memory at once: ``workers`` per mode, within ``budget``
    (``max_memory``, or what is available) at ``per_item`` bytes each; ``limited``
    where that is fewer processes than the CPUs allow (threads are fitted quietly)."""

    per_item: int
    budget: int
    workers: dict[Mode, int]
    limited: bool

    @classmethod
    def of(
        cls, per_item: int | None, max_memory: int | None, workers: dict[Mode, int]
    ) -> MemoryFit:
        budget = max_memory if max_memory is not None else cpus.available_memory(cpus.Cgroups())
        if not per_item or budget is None:
            return cls(per_item or 0, budget or 0, workers, False)
        fits = max(1, budget // per_item)
        fitted: dict[Mode, int] = {mode: min(n, fits) for mode, n in workers.items()}
        fitted["serial"] = workers["serial"]
        return cls(per_item, budget, fitted, fitted["processes"] < workers["processes"])


def check_advise_arguments(fn: Any, max_seconds: Any, given: dict[str, Any]) -> Options:
    """Refuse bad arguments of :func:`fastparallel.advise` before anything runs; the
    options ``given`` (those of ``parallel()`` that advise() takes), checked by the rules
    of ``parallel()``, as ``threadpool="auto"`` holds them (``n_workers`` as given)."""
    if not callable(fn):
        raise TypeError(f"fn must be callable, got {type(fn).__name__}: {fn!r:.60}")
    if is_coroutine_function(fn):
        raise TypeError(
            "advise() measures plain functions; a coroutine function always runs on an event loop "
            "(see parallel()), so there is nothing to choose"
        )
    # 0 workers is parallel()'s serial mode, which advise() always predicts anyway.
    check_count("n_workers", given.get("n_workers"), 1, none="each mode's default")
    check_seconds("max_seconds", max_seconds, zero=False)
    return Options(threadpool="auto", **given)


def _time_processes(
    m: Measurements,
    call: Call,
    workers: int,
    deadline: float,
    run: Callable[..., list[Any]],
    idle_pool: bool,
) -> Measurements:
    """``m`` with the start of ``workers`` worker processes (each unpickling the call) and
    a round trip measured, if the call can be pickled and there is time for it; else the
    estimates stay."""
    if m.pickle_error is not None:
        return m
    from fastparallel.auto.costs import load_call
    from fastparallel.errors import ParallelTimeoutError
    from fastparallel.serialize import pickling

    left = deadline - time.monotonic()
    if left < 2 * m.start_seconds + 0.05:
        return replace(m, start_source=m.start_source._replace(caveat=StartCaveat.NO_TIME))
    warm = idle_pool
    try:
        began = time.perf_counter()
        run(
            load_call,
            [pickling.dumps(tuple(call))] * workers,
            n_workers=workers,
            chunksize=1,
            timeout=left,
        )
        start = time.perf_counter() - began
    except ParallelTimeoutError:
        return replace(m, start_source=m.start_source._replace(caveat=StartCaveat.TOO_SLOW))
    except Exception as exc:  # a worker could not unpickle the call: processes cannot run it
        return replace(
            m,
            pickle_error=f"a worker process could not unpickle fn ({type(exc).__name__}: "
            f"{str(exc)[:120]})",
        )
    how = StartHow.MEASURED_IDLE_POOL if warm else StartHow.MEASURED_STARTED
    m = replace(m, start_seconds=start, start_source=StartSource(how, workers))
    left = deadline - time.monotonic()
    count = _ROUND_TRIPS * workers
    if left > 0.05:
        try:
            began = time.perf_counter()
            run(abs, range(count), n_workers=workers, chunksize=1, timeout=left)
            m = replace(m, round_trip=(time.perf_counter() - began) / count)
        except ParallelTimeoutError:
            pass  # the estimate stays
    return m
