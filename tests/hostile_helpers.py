"""Exceptions and results that refuse what fastparallel does to them (tests/test_hostile.py).

They live at module level so that worker processes import them by name (tests/ is on
``sys.path`` under pytest). Each ``fn`` here returns its item, except on item 1, where it
raises the exception of the kind it is given.
"""

from __future__ import annotations

import dataclasses
import os
import pickle
import threading
from typing import Any

FAILING = 1  # the item on which the functions below raise


@dataclasses.dataclass(frozen=True)
class FrozenError(Exception):
    """Refuses every attribute: ``add_note``, ``__traceback__ =``, ``__setstate__``."""

    code: int


class TupleNotesError(Exception):
    """Its ``__notes__`` is a tuple: ``add_note`` raises ``TypeError``."""

    def __init__(self, message: str):
        super().__init__(message)
        self.__notes__ = ("the user's own note",)


class RefusesPicklingError(Exception):
    """``__reduce__`` raises: neither pickle nor cloudpickle can take it whole."""

    def __reduce__(self) -> Any:
        raise TypeError("this exception refuses to be pickled")


class HostileStrError(Exception):
    """``str()`` and ``repr()`` raise."""

    def __str__(self) -> str:
        raise RuntimeError("str() of this exception fails")

    def __repr__(self) -> str:
        raise RuntimeError("repr() of this exception fails")


class LockedAttributeError(Exception):
    """Holds an attribute that cannot be pickled (a lock) beside one that can."""

    def __init__(self, message: str):
        super().__init__(message)
        self.lock = threading.Lock()
        self.detail = "kept"


class RequiredArgsError(Exception):
    """Its constructor needs two arguments, its ``args`` hold one (the message)."""

    def __init__(self, a: int, b: int):
        super().__init__(f"a={a} b={b}")
        self.a = a
        self.b = b


def _only_in_the_worker(caller: int, message: str) -> Exception:
    if os.getpid() == caller:
        raise pickle.UnpicklingError("this exception cannot be rebuilt in the caller")
    return OnlyInWorkerError(message, caller)


class OnlyInWorkerError(Exception):
    """Unpickles in the worker that raised it (so it looks fine there) but not in the
    caller (process id ``caller``), as an exception whose class only the worker can import."""

    def __init__(self, message: str, caller: int):
        super().__init__(message)
        self.caller = caller

    def __reduce__(self) -> Any:
        return (_only_in_the_worker, (self.caller, str(self)))


class KeepsAnError(Exception):
    """Keeps, as an attribute, an exception that cannot travel whole (a frozen one)."""

    def __init__(self, message: str):
        super().__init__(message)
        self.original = FrozenError(3)


def make(kind: str, caller: int = 0) -> BaseException:
    """A new exception of ``kind``; ``caller`` is the process id of the caller."""
    if kind == "frozen":
        return FrozenError(7)
    if kind == "tuple_notes":
        return TupleNotesError("notes in a tuple")
    if kind == "refuses_pickling":
        return RefusesPicklingError("refuses pickling")
    if kind == "hostile_str":
        return HostileStrError("str fails")
    if kind == "locked_attribute":
        return LockedAttributeError("holds a lock")
    if kind == "required_args":
        return RequiredArgsError(1, 2)
    if kind == "keeps_an_error":
        return KeepsAnError("keeps an error")
    if kind == "group":
        return ExceptionGroup("a group", [ValueError("a"), FrozenError(4)])  # noqa: F821 - 3.11+
    if kind == "only_in_worker":
        return OnlyInWorkerError("rebuilt only in the worker", caller)
    raise ValueError(kind)


def raise_on_one(x: int, kind: str, caller: int = 0) -> int:
    if x == FAILING:
        raise make(kind, caller)
    return x


async def araise_on_one(x: int, kind: str, caller: int = 0) -> int:
    return raise_on_one(x, kind, caller)


# -- results and items that need many descriptors ------------------------------------------

ARRAYS = 30  # large buffers per result: each travels in its own shared memory
ARRAY_BYTES = 256 * 1024


def many_arrays(i: int) -> list[Any]:
    import numpy as np

    return [np.full(ARRAY_BYTES // 8, i, dtype=np.float64) for _ in range(ARRAYS)]


def total(arrays: list[Any]) -> float:
    return float(sum(a.sum() for a in arrays))


def open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd")) - 1


def leave_room(room: int) -> None:
    """Lower this process's soft RLIMIT_NOFILE to ``room`` descriptors above those open."""
    import resource

    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (open_descriptors() + room, hard))


def leave_four() -> None:
    """An initializer: the worker is left 4 descriptors, once it has imported NumPy.

    An import opens descriptors too (a directory to list, a file, a shared library). A
    worker forked from the template has not imported NumPy when its first item arrives;
    unpickling that item imports it, and with 4 descriptors left it ran out while its
    reader thread took the next message (once in CI, on 3.13t). The tests that use this
    initializer are about where items and calls travel, so the import comes first.
    """
    import numpy  # noqa: F401

    leave_room(4)


def identity(x: Any) -> Any:
    return x


class ExitsWhenPickled:
    """A result whose pickling raises SystemExit."""

    def __reduce__(self) -> Any:
        raise SystemExit(3)


def exits_when_pickled_on_one(x: int) -> Any:
    return ExitsWhenPickled() if x == FAILING else x


def plus_total(x: float, arrays: list[Any]) -> float:
    return x + total(arrays)


def _exit_in(caller: int) -> Any:
    if os.getpid() == caller:
        raise SystemExit(4)
    return "rebuilt"


class ExitsWhenUnpickledInCaller:
    """A result that unpickles in the worker but raises SystemExit in the caller."""

    def __init__(self, caller: int):
        self.caller = caller

    def __reduce__(self) -> Any:
        return (_exit_in, (self.caller,))


def exits_in_caller_on_one(x: int, caller: int) -> Any:
    return ExitsWhenUnpickledInCaller(caller) if x == FAILING else x
