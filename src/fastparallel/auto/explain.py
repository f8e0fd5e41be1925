"""Plain words for what the cost model saw: the one-line reason ``threadpool="auto"``
logs and shows in the progress bar, and the reasons :class:`~fastparallel.Advice` lists.
"""

from __future__ import annotations

import math
from dataclasses import replace

from fastparallel.auto.model import MARGIN, UNKNOWN_ITEMS, Measurements, effective_cores, predict
from fastparallel.options import Mode

__all__ = ["behaviour", "bytes_text", "headline", "reasons", "seconds_text"]

_WAITING = 0.3  # an item whose process keeps less of a core busy than this mostly waits
_HOLDS_GIL = 0.5


def seconds_text(seconds: float) -> str:
    """``"40 ms"``, ``"0.06 µs"``, ``"1.23 s"``: two or three significant digits."""
    if math.isinf(seconds):
        return "cannot run"
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6)):
        if seconds >= scale or unit == "µs":
            value = seconds / scale
            return f"{value:.2f} {unit}" if value < 10 else f"{value:.3g} {unit}"
    raise AssertionError("unreachable")


def bytes_text(nbytes: float) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if nbytes >= scale:
            return f"{nbytes / scale:.3g} {unit}"
    return f"{nbytes:.0f} B"


def _kind(m: Measurements) -> str:
    """What an item spends its time on: "no-gil", "waits", "gil", "library" (its own
    threads keep cores busy), "shared" (two threads overlapped less than the cores
    allow) or "c" (code that releases the GIL)."""
    if m.free_threaded:
        return "no-gil"
    if m.cores < _WAITING:
        return "waits"
    if m.gil >= _HOLDS_GIL:
        return "gil"
    if m.cores >= 1.5:
        return "library"
    return "shared" if effective_cores(m) > 1.3 * m.cores else "c"


def _time_phrase(m: Measurements) -> str:
    if not m.finished:
        return f"the first item ran over {seconds_text(m.seconds_per_item)}"
    return f"items take {seconds_text(m.seconds_per_item)}"


def behaviour(m: Measurements) -> str:
    """``"items take 40 ms and hold the GIL 98% of the time"``."""
    kind = _kind(m)
    what = {
        "no-gil": "run without a GIL (free-threaded Python)",
        "waits": f"wait {1 - min(1.0, m.cores):.0%} of the time",
        "gil": f"hold the GIL {m.gil:.0%} of the time",
        "library": f"keep {m.cores:.1f} cores busy already",
        "shared": f"release the GIL, but two threads ran only {m.overlap or 0:.1f}x as fast as one",
        "c": f"release the GIL (held {m.gil:.0%} of the time)",
    }[kind]
    return f"{_time_phrase(m)} and {what}"


def headline(m: Measurements, mode: Mode, predicted: dict[Mode, float]) -> str:
    """``"processes — items take 40 ms and hold the GIL 98% of the time"``."""
    text = f"{mode} — {behaviour(m)}"
    if m.pickle_error is not None and mode == "threads" and _kind(m) == "gil":
        return f"{text}; processes are out: {m.pickle_error}"
    if (
        mode == "serial"
        and min(predicted["threads"], predicted["processes"]) >= predicted["serial"]
    ):
        return f"{text}: no pool is predicted to finish sooner"
    return text


def reasons(
    m: Measurements,
    mode: Mode,
    predicted: dict[Mode, float],
    n_items: int | None,
    workers: dict[Mode, int],
) -> list[str]:
    """A few sentences: how long items take, what they spend it on, the overheads that
    matter, and the verdict."""
    out = [_timing(m), _behaviour(m, workers)]
    overheads = _overheads(m, predicted, n_items, workers)
    if overheads:
        out.append(overheads)
    out.append(_verdict(mode, predicted, n_items))
    return out


def _timing(m: Measurements) -> str:
    if not m.finished:
        return (
            f"The first item had run {seconds_text(m.seconds_per_item)} without finishing; "
            "items take at least that long."
        )
    spread = f" (± {m.spread:.0%})" if m.sampled > 1 else ""
    text = f"Items take {seconds_text(m.seconds_per_item)} each{spread}, measured on {m.sampled:,} items."
    if m.warm_up:
        text += (
            f" The first took {seconds_text(m.warm_up + m.seconds_per_item)}: one-time costs (imports, "
            "caches) that each new worker process pays again."
        )
    return text


def _behaviour(m: Measurements, workers: dict[Mode, int]) -> str:
    kind, cpus = _kind(m), m.cpus
    cpu_word = "CPU" if cpus == 1 else "CPUs"
    text = {
        "no-gil": "This Python runs without a GIL, so threads run Python code in parallel, with nothing to pickle.",
        "waits": (
            f"They wait most of the time (their thread is on a CPU {m.thread_cpu:.0%} of it): threads "
            "overlap the waits, and more threads than CPUs help."
        ),
        "gil": (
            f"They hold the GIL {m.gil:.0%} of the time: threads run them one at a time; processes run "
            f"up to {min(workers['processes'], cpus)} at once on {cpus} {cpu_word}."
        ),
        "library": (
            f"Each keeps {m.cores:.1f} cores busy (a library's own threads): on {cpus} "
            f"{cpu_word}, running several at once gains little."
        ),
        "shared": (
            f"They release the GIL (held {m.gil:.0%} of the time), yet two threads ran only "
            f"{m.overlap or 0:.1f}x as many items per second as one: something they share limits them "
            "(memory, a lock, a library's own threads, or other programs on the CPUs)."
        ),
        "c": (
            f"They run code that releases the GIL (held {m.gil:.0%} of the time): threads run them on "
            f"{cpus} {cpu_word} at once, with nothing to pickle."
        ),
    }[kind]
    if m.overlap is not None and kind != "shared":
        text += f" Two threads ran {m.overlap:.1f}x as many items per second as one."
    return text


def _overheads(
    m: Measurements, predicted: dict[Mode, float], n_items: int | None, workers: dict[Mode, int]
) -> str:
    if m.pickle_error is not None:
        could = predict(
            replace(m, pickle_error=None), UNKNOWN_ITEMS if n_items is None else n_items, workers
        )
        return (
            f"Processes cannot run this call: {m.pickle_error}. They would take about "
            f"{seconds_text(could['processes'])}: define fn at module level, with nothing in it or its "
            "arguments that cannot be pickled (locks, open files, generators), to use them."
        )
    if m.item is None or m.result is None or math.isinf(predicted["processes"]):
        return ""
    per_item = m.item.dump_seconds + m.result.load_seconds + (m.item.nbytes + m.result.nbytes) / 1e9
    text = (
        f"Processes start {workers['processes']} workers in {seconds_text(m.start_seconds)} "
        f"({m.start_source}), and pickle each item ({bytes_text(m.item.nbytes)}) and result "
        f"({bytes_text(m.result.nbytes)}), {seconds_text(per_item)} per item in this process"
    )
    if per_item > m.seconds_per_item:
        text += ": more than the item's own work"
    return text + "."


def _verdict(mode: Mode, predicted: dict[Mode, float], n_items: int | None) -> str:
    count = (
        f"{n_items:,} items"
        if n_items is not None
        else "every 1,000 items (pass total= for the whole input)"
    )
    serial = predicted["serial"]
    if mode == "serial":
        return (
            f"Recommended: serial, {seconds_text(serial)} for {count}: neither threads "
            f"({seconds_text(predicted['threads'])}) nor processes ({seconds_text(predicted['processes'])}) "
            f"is predicted to take less than {1 - MARGIN:.0%} of that."
        )
    speedup = serial / predicted[mode] if predicted[mode] > 0 else math.inf
    return (
        f"Recommended: {mode}, predicted {seconds_text(predicted[mode])} for {count}, against "
        f"{seconds_text(serial)} serially ({speedup:.1f}x)."
    )
