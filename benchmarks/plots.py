"""Draws the PNG charts for the docs with matplotlib (Agg backend, no display needed)."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from .contenders import CONTENDERS, REFERENCE
from .core import MODE_LABELS, CaseKey
from .report import contenders_in, efficiency, fmt_seconds
from .results import ResultSet
from .workloads import WORKLOADS, Workload

HIGHLIGHT = "#d62728"
OTHERS = "#7f7f7f"
LINE_COLORS = [
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#17becf",
    "#bcbd22",
]
TICKS = [0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50, 100]


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(plt: Any, fig: Any, path: Path) -> bool:
    """Lay out ``fig``, write it to ``path`` and free it; True: a chart was drawn."""
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def workload_rows(
    results: ResultSet, workload: Workload
) -> list[tuple[str, list[tuple[str, float]]]]:
    """For each size and mode: (row title, [(contender label, median)]), fastest first."""
    names = contenders_in(results, workload.name)
    variants = list(dict.fromkeys(k.variant for k in results.cases if k.workload == workload.name))
    rows = []
    for variant in variants:
        for mode in workload.modes:
            bars = []
            for name in names:
                key_mode = "serial" if name == "serial" else mode
                case = results.cases.get(CaseKey(workload.name, variant, key_mode, name))
                if case is not None and case.median is not None:
                    bars.append((name, case.median))
            if bars:
                title = variant if mode == "none" else f"{variant}, {MODE_LABELS[mode]}"
                rows.append((title, sorted(bars, key=lambda bar: bar[1])))
    return rows


def plot_workload(results: ResultSet, workload: Workload, path: Path) -> bool:
    rows = workload_rows(results, workload)
    if not rows:
        return False
    plt = _pyplot()
    heights = [0.6 + 0.32 * len(bars) for _, bars in rows]
    fig, axes = plt.subplots(
        len(rows),
        1,
        figsize=(8, sum(heights) + 0.6),
        squeeze=False,
        gridspec_kw={"height_ratios": heights},
    )
    for ax, (title, bars) in zip(axes[:, 0], rows, strict=True):
        labels = [CONTENDERS[name].label for name, _ in bars]
        values = [seconds for _, seconds in bars]
        colors = [HIGHLIGHT if name == REFERENCE else OTHERS for name, _ in bars]
        ax.barh(labels, values, color=colors)
        ax.invert_yaxis()
        if max(values) / min(values) > 30:
            ax.set_xscale("log")
        for y, seconds in enumerate(values):
            ax.text(seconds, y, " " + fmt_seconds(seconds), va="center", fontsize=8)
        ax.set_title(title, fontsize=10, loc="left")
        ax.set_xlim(right=max(values) * (3 if ax.get_xscale() == "log" else 1.25))
        ax.tick_params(labelsize=8)
    axes[-1, 0].set_xlabel("median seconds (lower is better)")
    fig.suptitle(workload.title, fontsize=11)
    return _save(plt, fig, path)


def plot_efficiency(results: ResultSet, workload: Workload, path: Path) -> bool:
    series = {
        name: efficiency(results, workload, name) for name in contenders_in(results, workload.name)
    }
    series = {name: points for name, points in series.items() if points}
    if not series:
        return False
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for name, points in series.items():
        ax.plot(
            [p[0] for p in points],
            [p[2] for p in points],
            marker="o",
            color=HIGHLIGHT if name == REFERENCE else None,
            label=CONTENDERS[name].label,
        )
    ax.axhline(1.0, color="black", linewidth=0.8, linestyle="--", label="ideal")
    ax.set_xlabel("workers")
    ax.set_ylabel("parallel efficiency T1 / (n Tn)")
    ax.set_xticks(sorted({p[0] for points in series.values() for p in points}))
    ax.set_ylim(0, 1.15)
    ax.legend(fontsize=8)
    ax.set_title(workload.title, fontsize=11)
    return _save(plt, fig, path)


def _memcpy_rate(results: ResultSet, workload: Workload) -> float | None:
    """The median memcpy bandwidth (bytes per second) the workload's cases measured."""
    rates = [
        extra["memcpy_bytes_per_second"]
        for key, case in results.cases.items()
        if key.workload == workload.name
        for extra in case.extras
        if "memcpy_bytes_per_second" in extra
    ]
    return statistics.median(rates) if rates else None


def plot_sweep(results: ResultSet, workload: Workload, path: Path) -> bool:
    """Time per item against the swept size, one line per contender, and the memcpy limit."""
    assert workload.sweep is not None
    sizes = workload.sizes(results.quick)
    series: dict[str, list[tuple[float, float]]] = {}
    for key, case in results.cases.items():
        if key.workload == workload.name and case.median is not None and key.variant in sizes:
            params = sizes[key.variant]
            nbytes, n = float(params[workload.sweep]) * 2**20, int(params["n"])
            series.setdefault(key.contender, []).append((nbytes, case.median / n))
    if not series:
        return False
    plt = _pyplot()
    from matplotlib.ticker import FuncFormatter

    fig, ax = plt.subplots(figsize=(7, 4.2))
    others = iter(LINE_COLORS)
    for name in (n for n in CONTENDERS if n in series):
        points = sorted(series[name])
        ax.plot(
            [p[0] for p in points],
            [p[1] for p in points],
            marker="o",
            label=CONTENDERS[name].label,
            color=HIGHLIGHT if name == REFERENCE else next(others),
            linewidth=2 if name == REFERENCE else 1,
        )
    rate = _memcpy_rate(results, workload)
    if rate:
        xs = sorted({p[0] for points in series.values() for p in points})
        ax.plot(
            xs,
            [x / rate for x in xs],
            color="black",
            linestyle="--",
            label=f"one memcpy ({rate / 1e9:.1f} GB/s)",
        )
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: _bytes_label(x)))
    ax.set_xlabel("result size")
    ax.set_ylabel("median seconds per result")
    ax.legend(fontsize=8)
    ax.set_title(workload.title, fontsize=11)
    return _save(plt, fig, path)


def _bytes_label(x: float) -> str:
    for unit, scale in (("GB", 2**30), ("MB", 2**20), ("KB", 2**10)):
        if x >= scale:
            return f"{x / scale:g} {unit}"
    return f"{x:g} B"


def plot_targets(targets: list[dict[str, Any]], path: Path) -> bool:
    shown = [t for t in targets if t["value"] is not None]
    if not shown:
        return False
    plt = _pyplot()
    from matplotlib.ticker import FixedLocator, FuncFormatter

    fig, ax = plt.subplots(figsize=(9, 0.4 * len(shown) + 1.2))
    fractions = [t["value"] / t["limit"] for t in shown]
    colors = ["#2ca02c" if t["status"] == "pass" else HIGHLIGHT for t in shown]
    ax.barh([t["target"] for t in shown], fractions, color=colors)
    ax.axvline(1.0, color="black", linewidth=0.8, linestyle="--")
    ax.invert_yaxis()
    ax.set_xscale("log")
    low, high = min(fractions + [1.0]) / 1.5, max(fractions + [1.0]) * 1.5
    ax.set_xlim(low, high)
    ax.xaxis.set_major_locator(FixedLocator([t for t in TICKS if low <= t <= high]))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:g}"))
    ax.xaxis.set_minor_formatter(FuncFormatter(lambda x, _: ""))
    ax.set_xlabel("measured / limit (left of the dashed line: target met)")
    ax.tick_params(labelsize=8)
    return _save(plt, fig, path)


def draw_all(results: ResultSet, out: Path) -> list[Path]:
    """Writes every chart into ``out`` and returns the paths written."""
    written = []
    for workload in WORKLOADS.values():
        path = out / f"{workload.name}.png"
        if plot_workload(results, workload, path):
            written.append(path)
        if workload.efficiency:
            path = out / f"{workload.name}_efficiency.png"
            if plot_efficiency(results, workload, path):
                written.append(path)
        if workload.sweep:
            path = out / f"{workload.name}_sweep.png"
            if plot_sweep(results, workload, path):
                written.append(path)
    if plot_targets(results.targets(), out / "targets.png"):
        written.append(out / "targets.png")
    return written
