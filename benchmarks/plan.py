"""Turns the selected workloads and contenders into the list of cases to measure or skip."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from .contenders import CONTENDERS
from .core import CaseKey
from .workloads import Workload


@dataclass(frozen=True)
class Planned:
    key: CaseKey
    skip: str | None = None
    """Why this combination is not measured (None: it is measured)."""


def plan_workload(workload: Workload, contenders: Sequence[str], quick: bool) -> list[Planned]:
    """Every case of one workload, in report order: per size, serial first, then by mode."""
    cases: list[Planned] = []
    chosen = [
        c
        for c in contenders
        if (workload.contenders is None or c in workload.contenders)
        and (CONTENDERS[c].only_in is None or workload.name in CONTENDERS[c].only_in)
    ]
    for variant, params in workload.sizes(quick).items():
        if "serial" in chosen:
            reason = None if workload.serial is True else str(workload.serial or "not measured")
            cases.append(Planned(CaseKey(workload.name, variant, "serial", "serial"), reason))
        for mode in workload.modes:
            for name in chosen:
                if name == "serial":
                    continue
                reason = workload.skip_reason(CONTENDERS[name], mode, params)
                cases.append(Planned(CaseKey(workload.name, variant, mode, name), reason))
    return cases


def plan(workloads: Iterable[Workload], contenders: Sequence[str], quick: bool) -> list[Planned]:
    return [case for w in workloads for case in plan_workload(w, contenders, quick)]


def schedule(cases: Sequence[Planned], rep: int) -> list[CaseKey]:
    """The order of one repetition: group by workload/size/mode, contenders interleaved.

    Within each group the contender order is rotated by one every repetition, so that no
    contender always runs first (on a cold page cache) or right after a heavy neighbour.
    """
    groups: dict[tuple[str, str, str], list[CaseKey]] = {}
    serial: list[CaseKey] = []  # joins the first group of its workload and size
    for key in (case.key for case in cases if case.skip is None):
        if key.mode == "serial":
            serial.append(key)
            continue
        group = groups.setdefault((key.workload, key.variant, key.mode), [])
        waiting = [s for s in serial if (s.workload, s.variant) == (key.workload, key.variant)]
        group.extend(waiting)
        serial = [s for s in serial if s not in waiting]
        group.append(key)
    for key in serial:
        groups[(key.workload, key.variant, key.mode)] = [key]
    order: list[CaseKey] = []
    for keys in groups.values():
        shift = rep % len(keys)
        order.extend(keys[shift:] + keys[:shift])
    return order
