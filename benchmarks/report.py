"""Writes the Markdown report (and prints the targets table) from a :class:`ResultSet`."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .contenders import CONTENDERS, REFERENCE
from .core import MODE_LABELS, CaseKey
from .results import CaseResult, ResultSet
from .targets import format_pair
from .workloads import WORKLOADS, Workload


def fmt_seconds(seconds: float | None) -> str:
    if seconds is None:
        return "n/a"
    if seconds < 0.9995e-3:
        return f"{seconds * 1e6:.0f} µs"
    if seconds < 0.9995:
        return f"{seconds * 1e3:.3g} ms"
    return f"{seconds:.3g} s"


def table(header: list[str], rows: Iterable[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


class Notes:
    """Footnotes for skipped and failed cells, shared by identical texts."""

    def __init__(self) -> None:
        self.texts: dict[str, str] = {}

    def ref(self, text: str) -> str:
        if text not in self.texts:
            self.texts[text] = (
                chr(ord("a") + len(self.texts)) if len(self.texts) < 26 else str(len(self.texts))
            )
        return self.texts[text]

    def lines(self) -> list[str]:
        return [f"- ({mark}) {text}" for text, mark in self.texts.items()]


def cell(results: ResultSet, case: CaseResult | None, mode: str, notes: Notes) -> str:
    if case is None:
        return ""
    if case.skip is not None:
        return f"n/a ({notes.ref(case.key.contender + ': ' + case.skip)})"
    if not case.ok:
        reason = "; ".join(dict.fromkeys(case.failures))[:300]
        return f"**FAILED** ({notes.ref(f'{case.key}: {reason}')})"
    text = fmt_seconds(case.median)
    if case.key.contender == REFERENCE:
        return f"**{text}**"
    ratio = results.ratios(case.key).get(mode)
    return f"{text} ({ratio:.2f}x)" if ratio is not None else text


def contenders_in(results: ResultSet, workload: str) -> list[str]:
    present = {k.contender for k in results.cases if k.workload == workload}
    return [name for name in CONTENDERS if name in present]


def workload_section(results: ResultSet, workload: Workload) -> list[str]:
    names = contenders_in(results, workload.name)
    if not names:
        return []
    notes = Notes()
    variants = list(dict.fromkeys(k.variant for k in results.cases if k.workload == workload.name))
    rows = []
    for variant in variants:
        for mode in workload.modes:
            row = [variant, MODE_LABELS[mode]]
            for name in names:
                key_mode = "serial" if name == "serial" else mode
                case = results.cases.get(CaseKey(workload.name, variant, key_mode, name))
                row.append(cell(results, case, mode, notes))
            rows.append(row)
    header = ["size", "mode"] + [CONTENDERS[n].label for n in names]
    lines = [f"### {workload.title} (`{workload.name}`)", "", workload.description, ""]
    lines += table(header, rows)
    if notes.texts:
        lines += ["", *notes.lines()]
    if workload.efficiency:
        lines += ["", *efficiency_table(results, workload, names)]
    return lines + [""]


def efficiency(
    results: ResultSet, workload: Workload, contender: str
) -> list[tuple[int, float, float]]:
    """(workers, median, efficiency T1 / (n * Tn)) for each size of a scaling workload."""
    points = []
    for key, case in results.cases.items():
        if (key.workload, key.contender) != (workload.name, contender) or case.median is None:
            continue
        workers = int(workload.sizes(results.quick)[key.variant].get("workers", 0))
        if workers:
            points.append((workers, case.median))
    points.sort()
    if not points or points[0][0] != 1:
        return []
    t1 = points[0][1]
    return [(n, t, t1 / (n * t)) for n, t in points]


def efficiency_table(results: ResultSet, workload: Workload, names: list[str]) -> list[str]:
    rows = []
    for name in names:
        for n, t, eff in efficiency(results, workload, name):
            rows.append([CONTENDERS[name].label, str(n), fmt_seconds(t), f"{eff:.0%}"])
    return table(["contender", "workers", "median", "parallel efficiency"], rows) if rows else []


def targets_table(targets: list[dict[str, Any]]) -> list[str]:
    rows = [
        [
            t["target"],
            *format_pair(t["value"], t["limit"], t["unit"]),
            {"pass": "pass", "fail": "**FAIL**"}.get(t["status"], t["status"]),
        ]
        for t in targets
    ]
    return table(["target", "measured", "limit", "result"], rows)


def machine_line(meta: dict[str, Any]) -> str:
    m = meta["machine"]
    return (
        f"{m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB, {m['system']}, "
        f"Python {m['python']}; fastparallel {m['libraries'].get('fastparallel')}"
    )


def markdown(results: ResultSet, meta: dict[str, Any]) -> str:
    lines = [
        f"# fastparallel benchmarks: `{meta['tag']}`",
        "",
        f"- Machine: {machine_line(meta)}",
        f"- Command: `{meta['command']}`"
        + (f" at revision `{meta['revision']}`" if meta.get("revision") else ""),
        (
            f"- {meta['reps']} repetition(s), each case in a fresh interpreter; cells show the median "
            f"and, in brackets, the ratio to fastparallel in the same row (below 1: faster than "
            f"fastparallel). Calibration: {meta['loops_per_ms']:.0f} loops/ms. "
            f"Run took {meta['duration_s'] / 60:.1f} min."
        ),
        *(
            ["- Quick run: tiny sizes (the descriptions give the full sizes), not for comparison."]
            * meta["quick"]
        ),
        "",
        "## Targets",
        "",
        *targets_table(results.targets()),
        "",
        "## Results",
        "",
    ]
    for workload in WORKLOADS.values():
        lines += workload_section(results, workload)
    return "\n".join(lines).rstrip() + "\n"
