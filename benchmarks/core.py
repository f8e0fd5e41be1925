"""Types shared by the runner, the child process, the contenders and the workloads."""

from __future__ import annotations

import functools
import json
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Mode = Literal["process", "thread", "async", "serial", "none"]
"""How a case runs: on worker processes, on threads, as coroutines on an event loop, serially,
or (imports) not at all."""

MODE_LABELS: Mapping[str, str] = {
    "process": "processes",
    "thread": "threads",
    "async": "coroutines",
    "serial": "serial",
    "none": "-",
}

RESULT_MARKER = "BENCH_RESULT "
"""Prefix of the one stdout line on which a child reports its measurement as JSON."""

Params = Mapping[str, Any]


@dataclass
class Job:
    """One call to map: ``fn(item, **kwargs)`` for every item, in order."""

    fn: Callable[..., Any]
    items: list[Any]
    kwargs: dict[str, Any] = field(default_factory=dict)
    progress: bool = False

    @functools.cached_property
    def bound(self) -> Callable[[Any], Any]:
        """``fn`` with the keyword arguments bound, for APIs that take a one-argument callable.

        It is cached so that repeated calls hand a pool the very same object (mpire restarts
        its kept-alive workers when the function changes).
        """
        return functools.partial(self.fn, **self.kwargs) if self.kwargs else self.fn


class Session(ABC):
    """A contender ready to run jobs in one mode with a fixed number of workers.

    Creating the session is where a contender with an explicit pool starts it; ``map`` may be
    called several times (the warm workloads call it twice); ``close`` releases the pool.
    """

    def __init__(self, mode: Mode, n_workers: int) -> None:
        self.mode = mode
        self.n_workers = n_workers
        self.threads = mode == "thread"

    @abstractmethod
    def map(self, job: Job) -> list[Any]:
        """Runs ``job`` and returns the results as a list, in item order."""

    def close(self) -> None:  # noqa: B027 (optional hook: most sessions have nothing to release)
        """Releases whatever the session started."""


SessionFactory = Callable[[Mode, int], Session]


@dataclass(frozen=True)
class CaseKey:
    """Names one measured combination."""

    workload: str
    variant: str
    mode: str
    contender: str

    def as_args(self) -> list[str]:
        """Command-line arguments selecting this case in ``benchmarks._one``."""
        return [
            "--workload",
            self.workload,
            "--size",
            self.variant,
            "--mode",
            self.mode,
            "--contender",
            self.contender,
        ]

    def __str__(self) -> str:
        return f"{self.workload}/{self.variant}/{self.mode}/{self.contender}"


@dataclass
class Measurement:
    """What a child reports: seconds for the timed region and whether the results were right."""

    seconds: float | None
    correct: bool
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_line(self) -> str:
        return RESULT_MARKER + json.dumps(asdict(self))

    @classmethod
    def from_output(cls, stdout: str) -> Measurement | None:
        """Finds the last result line in a child's stdout (workers may print too)."""
        for line in reversed(stdout.splitlines()):
            if line.startswith(RESULT_MARKER):
                data = json.loads(line[len(RESULT_MARKER) :])
                return cls(**data)
        return None


@dataclass(frozen=True)
class ChildContext:
    """Everything a workload needs to measure one case inside the child process."""

    contender: Any  # benchmarks.contenders.Contender (kept loose to avoid an import cycle)
    mode: Mode
    params: Params
    loops_per_ms: float

    def loops(self, ms: float) -> int:
        """Loop count for :func:`benchmarks.tasks.spin` that takes about ``ms`` milliseconds."""
        return max(1, round(self.loops_per_ms * ms))
