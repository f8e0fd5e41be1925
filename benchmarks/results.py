"""Collects measurements per case and turns them into medians, ratios and the JSON document."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any

from .contenders import REFERENCE
from .core import CaseKey, Measurement
from .plan import Planned
from .targets import TARGETS, evaluate


@dataclass
class CaseResult:
    key: CaseKey
    skip: str | None = None
    samples: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    extras: list[dict[str, Any]] = field(default_factory=list)

    def add(self, measurement: Measurement) -> None:
        if measurement.correct and measurement.seconds is not None:
            self.samples.append(measurement.seconds)
        else:
            self.failures.append(measurement.error or "wrong results")
        if measurement.extra:
            self.extras.append(measurement.extra)

    @property
    def measured(self) -> bool:
        return self.skip is None

    @property
    def ok(self) -> bool:
        """Measured, every repetition gave correct results."""
        return self.measured and not self.failures and bool(self.samples)

    @property
    def median(self) -> float | None:
        return statistics.median(self.samples) if self.ok else None


class ResultSet:
    """All cases of a run, in plan order."""

    def __init__(self, planned: list[Planned], quick: bool = False) -> None:
        self.quick = quick
        self.cases: dict[CaseKey, CaseResult] = {p.key: CaseResult(p.key, p.skip) for p in planned}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ResultSet:
        """Rebuilds a result set from ``results.json`` (to redraw reports without re-running)."""
        results = cls([], bool(data["meta"].get("quick")))
        for entry in data["cases"]:
            key = CaseKey(entry["workload"], entry["size"], entry["mode"], entry["contender"])
            results.cases[key] = CaseResult(
                key,
                entry.get("skipped"),
                list(entry.get("samples", [])),
                list(entry.get("failures", [])),
                list(entry.get("extra", [])),
            )
        return results

    def add(self, key: CaseKey, measurement: Measurement) -> None:
        self.cases[key].add(measurement)

    def medians(self) -> dict[CaseKey, float]:
        return {k: m for k, c in self.cases.items() if (m := c.median) is not None}

    def reference(self, key: CaseKey, mode: str) -> float | None:
        """The fastparallel median for the same workload and size, in ``mode``."""
        ref = self.cases.get(CaseKey(key.workload, key.variant, mode, REFERENCE))
        return ref.median if ref else None

    def modes_of(self, workload: str, variant: str) -> list[str]:
        return list(
            dict.fromkeys(
                k.mode
                for k in self.cases
                if (k.workload, k.variant) == (workload, variant) and k.mode != "serial"
            )
        )

    def ratios(self, key: CaseKey) -> dict[str, float]:
        """The case's median over fastparallel's, per mode (serial is compared with each mode)."""
        median = self.cases[key].median
        modes = self.modes_of(key.workload, key.variant) if key.mode == "serial" else [key.mode]
        out = {}
        for mode in modes:
            ref = self.reference(key, mode)
            if median is not None and ref:
                out[mode] = median / ref
        return out

    def failed(self) -> list[CaseResult]:
        return [c for c in self.cases.values() if c.measured and not c.ok]

    def targets(self) -> list[dict[str, Any]]:
        medians = self.medians()
        return [evaluate(t, medians) for t in TARGETS]

    def to_json(self, meta: dict[str, Any]) -> dict[str, Any]:
        cases = []
        for c in self.cases.values():
            entry: dict[str, Any] = {
                "workload": c.key.workload,
                "size": c.key.variant,
                "mode": c.key.mode,
                "contender": c.key.contender,
            }
            if c.skip is not None:
                entry["skipped"] = c.skip
            else:
                entry.update(
                    correct=c.ok,
                    samples=c.samples,
                    median=c.median,
                    ratio_to_fastparallel=self.ratios(c.key),
                    failures=c.failures,
                )
                if c.extras:
                    entry["extra"] = c.extras
            cases.append(entry)
        return {"meta": meta, "targets": self.targets(), "cases": cases}
