"""Functions run by workers in the tests of item_timeout, retries and per_worker.

They live at module level so that worker processes import them by name (tests/ is on
``sys.path`` under pytest and reaches workers with the caller's context). Attempts are
counted in files: each attempt of an item appends one JSON line (its pid, thread and
``time.monotonic()``, a system-wide clock) to ``<dir>/attempts-<item>``.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any


def record_attempt(directory: str, x: Any) -> int:
    """Append this attempt of item ``x``; returns its number (1 for the first)."""
    path = Path(directory) / f"attempts-{x}"
    line = json.dumps(
        {"pid": os.getpid(), "thread": threading.get_ident(), "time": time.monotonic()}
    )
    with open(path, "a") as f:  # one short append per attempt: lines never interleave
        f.write(line + "\n")
    return len(path.read_text().splitlines())


def attempts(directory: str | Path, x: Any) -> list[dict[str, Any]]:
    path = Path(directory) / f"attempts-{x}"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def flaky(x: int, *, directory: str, fail: dict[int, int], error: str = "value") -> int:
    """Item ``x`` raises on its first ``fail.get(x, 0)`` attempts, then returns ``x * x``."""
    attempt = record_attempt(directory, x)
    if attempt <= fail.get(x, 0):
        if error == "key":
            raise KeyError(f"attempt {attempt} of item {x}")
        raise ValueError(f"attempt {attempt} of item {x}")
    return x * x


def crash_first(x: int, *, directory: str, target: int) -> int:
    """The first attempt of item ``target`` kills its worker process."""
    if record_attempt(directory, x) == 1 and x == target:
        os._exit(9)
    return x * x


def stuck_first(
    x: int, *, directory: str, target: int, event: threading.Event | None = None
) -> int:
    """The first attempt of item ``target`` never returns by itself: a thread waits on
    ``event`` (the test releases it), a process loops forever (it gets killed)."""
    if record_attempt(directory, x) == 1 and x == target:
        if event is not None:
            event.wait(120)
        else:
            while True:
                pass
    return x * x


def stuck_on(
    x: int,
    *,
    directory: str,
    stuck: tuple[int, ...],
    event: threading.Event | None = None,
    barrier: threading.Barrier | None = None,
) -> tuple[int, int]:
    """Items in ``stuck`` never return by themselves (a thread waits on ``event``, a process
    loops); the others meet at ``barrier`` if given. Returns ``(x * x, thread id)``."""
    record_attempt(directory, x)
    if x in stuck:
        if event is not None:
            event.wait(120)
        else:
            while True:
                pass
    if barrier is not None:
        barrier.wait(60)
    return x * x, threading.get_ident()


def square(x: int) -> int:
    return x * x


# -- per_worker -----------------------------------------------------------------------


class Model:
    """A stand-in for something costly to build; each build appends a line to ``log``."""

    def __init__(self, log: str, scale: int = 1):
        self.scale = scale
        self.pid = os.getpid()
        with open(log, "a") as f:
            f.write(f"{os.getpid()} {threading.get_ident()}\n")

    def predict(self, x: int) -> int:
        return self.scale * x


def builds(log: str | Path) -> list[tuple[int, int]]:
    """``(pid, thread)`` of every build logged so far."""
    path = Path(log)
    if not path.exists():
        return []
    return [(int(p), int(t)) for p, t in (line.split() for line in path.read_text().splitlines())]


def use_model(get: Any, x: int) -> tuple[int, int, int, int]:
    """``(prediction, pid, thread, id of the model)`` with the model from ``get()``."""
    model = get()
    return model.predict(x), os.getpid(), threading.get_ident(), id(model)
