"""The exceptions fastparallel raises, and the wording of the errors it delivers.

A failing item is always named in the error (index and a short repr), the original
exception type is kept, and a worker's traceback is attached as ``__cause__`` (the same
convention as :mod:`concurrent.futures`, whose ``_RemoteTraceback`` it mirrors). How an exception crosses from a worker
process to the caller is in :mod:`.remote_errors`.
"""

from __future__ import annotations

import contextlib
import reprlib
import sys
from functools import lru_cache

TYPE_CHECKING = False  # worker processes import this module: no typing at run time
if TYPE_CHECKING:
    from typing import Any

__all__ = [
    "FastParallelError",
    "ItemTimeoutError",
    "ParallelTimeoutError",
    "RemoteError",
    "TaskExitError",
    "WorkerDiedError",
    "add_note",
    "attempts_note",
    "deliverable",
    "describe_exit",
    "describe_item",
    "initializer_error",
    "item_error",
    "item_timeout_error",
    "set_attribute",
    "set_cause",
    "start_crash_error",
    "worker_start_error",
]

if sys.version_info < (3, 11):  # concurrent.futures.TimeoutError is the builtin one from 3.11 on
    from concurrent.futures import TimeoutError as _FuturesTimeoutError

    _TIMEOUT_BASES: tuple[type, ...] = (TimeoutError, _FuturesTimeoutError)
else:
    _TIMEOUT_BASES = (TimeoutError,)


class FastParallelError(Exception):
    """Base class of the errors that fastparallel itself raises."""


def _define_worker_died_error(base: type) -> type:
    class WorkerDiedError(FastParallelError, base):  # type: ignore[misc]
        """A worker process died (``os._exit``, a signal such as SIGKILL, a segfault) while running items.

        A subclass of ``concurrent.futures.process.BrokenProcessPool``.

        Attributes:
            indices: input indices of the items that were running in the dead worker.
            exitcode: the process exit code; negative for a signal (``-9`` is SIGKILL).
            out_of_memory: whether the OOM killer killed it (memory was short then).
        """

        def __init__(
            self,
            message: str,
            indices: tuple[int, ...] = (),
            exitcode: int | None = None,
            out_of_memory: bool = False,
        ):
            super().__init__(message)
            self.indices = indices
            self.exitcode = exitcode
            self.out_of_memory = out_of_memory

        def __reduce__(self) -> Any:
            return (type(self), (str(self), self.indices, self.exitcode, self.out_of_memory))

    WorkerDiedError.__module__ = __name__
    WorkerDiedError.__qualname__ = "WorkerDiedError"
    return WorkerDiedError


if TYPE_CHECKING:
    from concurrent.futures.process import BrokenProcessPool

    class WorkerDiedError(FastParallelError, BrokenProcessPool):
        indices: tuple[int, ...]
        exitcode: int | None
        out_of_memory: bool

        def __init__(
            self,
            message: str,
            indices: tuple[int, ...] = (),
            exitcode: int | None = None,
            out_of_memory: bool = False,
        ): ...


@lru_cache(maxsize=1)
def worker_died_error() -> type[WorkerDiedError]:
    """The WorkerDiedError class, defined on first use.

    It subclasses ``BrokenProcessPool``, whose module imports all of multiprocessing;
    defining it lazily keeps ``import fastparallel`` fast for code that never uses
    processes.
    """
    from concurrent.futures.process import BrokenProcessPool

    cls = _define_worker_died_error(BrokenProcessPool)
    globals()["WorkerDiedError"] = cls
    return cls


def __getattr__(name: str) -> Any:
    if name == "WorkerDiedError":
        return worker_died_error()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class TaskExitError(FastParallelError):
    """``fn`` raised ``SystemExit``, ``KeyboardInterrupt`` or another non-``Exception``.

    Such an exception would otherwise end the caller; it is wrapped and the original is
    kept as ``__cause__``.
    """


class ParallelTimeoutError(FastParallelError, *_TIMEOUT_BASES):  # type: ignore[misc]
    """The whole call took longer than ``timeout`` seconds (a ``TimeoutError``)."""


class ItemTimeoutError(FastParallelError, *_TIMEOUT_BASES):  # type: ignore[misc]
    """One item ran longer than ``item_timeout`` seconds (a ``TimeoutError``).

    The other items go on; the message names the item and the limit.

    Attributes:
        index: the input index of the item.
        seconds: the limit it ran past (``item_timeout``).
    """

    def __init__(self, message: str, index: int = -1, seconds: float = 0.0):
        super().__init__(message)
        self.index = index
        self.seconds = seconds

    def __reduce__(self) -> Any:
        return (type(self), (str(self), self.index, self.seconds))


class RemoteError(FastParallelError):
    """Stand-in for an exception whose class could not be rebuilt in the caller.

    ``type_name`` holds the original class's qualified name.
    """

    def __init__(self, message: str, type_name: str = ""):
        super().__init__(message)
        self.type_name = type_name

    def __reduce__(self) -> Any:
        return (type(self), (str(self), self.type_name))


_repr = reprlib.Repr()
_repr.maxstring = 60
_repr.maxother = 60
_repr.maxlist = _repr.maxtuple = _repr.maxdict = _repr.maxset = 4


def short_repr(obj: Any) -> str:
    """A repr of at most about 80 characters that never raises."""
    try:
        text = _repr.repr(obj)
    except Exception:
        text = f"<{type(obj).__name__} object>"
    return text if len(text) <= 80 else text[:77] + "..."


def bytes_text(nbytes: float) -> str:
    """A size in words, in decimal units as memory is sold.

    Example:
        >>> bytes_text(3.1e9), bytes_text(35_200_000), bytes_text(210_000_000), bytes_text(999)
        ('3.1 GB', '35.2 MB', '210 MB', '999 B')
    """
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if nbytes >= scale:
            return f"{nbytes / scale:.3g} {unit}"
    return f"{nbytes:.0f} B"


def describe_item(index: int, item: Any) -> str:
    """``"item 7 ('abc')"``: how errors name an input item."""
    return f"item {index} ({short_repr(item)})"


def add_note(exc: BaseException, note: str) -> None:
    """``exc.add_note(note)``, also on Python 3.10 (where notes are stored but not printed).

    Never raises, and never replaces what the user put in ``__notes__``: an exception that
    refuses attributes (a frozen dataclass) still gets the note, a tuple of notes becomes a
    longer tuple, and one that refuses every way (a ``__notes__`` that is not a sequence, or
    a property that raises) goes on without it. The exception itself is what matters.

    Example:
        >>> import dataclasses
        >>> @dataclasses.dataclass(frozen=True)
        ... class Frozen(Exception):
        ...     code: int
        >>> exc = Frozen(7)
        >>> add_note(exc, "raised by fn on item 3 (3)")
        >>> exc.__notes__
        ['raised by fn on item 3 (3)']
    """
    try:
        exc.add_note(note)  # type: ignore[attr-defined]
        return
    except Exception:  # refused (a frozen dataclass, a tuple of notes), or Python 3.10
        pass
    try:
        notes = getattr(exc, "__notes__", None)
        if isinstance(notes, list):
            notes.append(note)
            return
        if notes is not None and not isinstance(notes, tuple):
            raise TypeError(f"__notes__ is a {type(notes).__name__}, not a list or a tuple")
        set_attribute(exc, "__notes__", [note] if notes is None else (*notes, note))
    except Exception as refused:
        import logging

        logging.getLogger("fastparallel").debug(
            "fastparallel: could not add the note %r to a %s: %r",
            note,
            type(exc).__qualname__,
            refused,
        )


def set_attribute(exc: BaseException, name: str, value: Any) -> None:
    """``setattr(exc, name, value)``, also on an exception that refuses attributes (a frozen
    dataclass, a ``__setattr__`` that raises): the user's exception is delivered as it is,
    and what fastparallel attaches to it (a note, the worker's traceback) goes around it."""
    try:
        setattr(exc, name, value)
    except Exception:
        object.__setattr__(exc, name, value)


def set_cause(exc: BaseException, cause: BaseException) -> None:
    """``exc.__cause__ = cause``, even where ``exc`` refuses attributes; never raises."""
    with contextlib.suppress(Exception):
        set_attribute(exc, "__cause__", cause)


def deliverable(exc: BaseException, origin: str) -> BaseException:
    """``exc`` with the note ``"fastparallel: " + origin``, or wrapped in a
    :class:`TaskExitError` if it would end the caller (not an ``Exception``).

    Never raises: whatever ``exc`` refuses, the caller gets it (or its wrapper)."""
    if isinstance(exc, Exception):
        add_note(exc, f"fastparallel: {origin}")
        return exc
    try:
        first = short_repr(exc.args[0]) if exc.args else ""
    except Exception:
        first = ""
    wrapped = TaskExitError(
        f"{type(exc).__name__}({first}) {origin}; fastparallel stopped it from ending the caller"
    )
    wrapped.__cause__ = exc
    return wrapped


def item_error(exc: BaseException, index: int, item: Any) -> BaseException:
    """The exception to deliver for an item whose call raised ``exc``.

    An ``Exception`` is returned as it is, with a note naming the item. Anything else
    (``SystemExit``, ``KeyboardInterrupt``, ...) is wrapped in :class:`TaskExitError`.
    """
    return deliverable(exc, f"raised by fn on {describe_item(index, item)}")


def initializer_error(exc: BaseException, where: str) -> BaseException:
    """The exception to deliver when the ``initializer`` raised ``exc`` in ``where``."""
    return deliverable(exc, f"raised by the initializer of {where}")


# Why a worker process could not start, by the stage where it failed (protocol.StartStage).
_START_STAGES = {
    "CONTEXT": "it could not take over the caller's working directory, sys.path and environment",
    "LOAD": "its initializer and initargs could not be unpickled there",
    "RUN": "raised by the initializer",
    "FORK": "it failed to set itself up after the fork",
}


def worker_start_error(exc: BaseException, stage: str) -> BaseException:
    """The exception to deliver when a worker process could not start: ``exc``, raised
    there at ``stage`` (a ``StartStage`` name), with the worker's traceback as its cause."""
    return deliverable(exc, f"a worker process could not start: {_START_STAGES[stage]}")


def start_crash_error(pid: int, exitcode: int | None) -> WorkerDiedError:
    """The error for a worker process that died while starting, before running any item."""
    return worker_died_error()(
        f"a worker process (pid {pid}) could not start: it {describe_exit(exitcode)} "
        "before running any item; its output, if any, is on stderr",
        (),
        exitcode,
    )


def signal_name(signum: int) -> str:
    import signal

    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def describe_exit(exitcode: int | None) -> str:
    """Human words for a dead worker's exit code."""
    import signal

    if exitcode is None:
        return "died (exit status unknown)"
    if exitcode < 0:
        name = signal_name(-exitcode)
        text = f"was killed by {name}"
        if -exitcode == getattr(signal, "SIGKILL", 9):
            text += " (it may have run out of memory: the OOM killer sends SIGKILL)"
        elif -exitcode == getattr(signal, "SIGSEGV", 11):
            text += " (a segmentation fault; the worker's Python traceback is on stderr)"
        return text
    return f"exited with code {exitcode}"


def out_of_memory_words(exitcode: int | None) -> str:
    """What happened to a worker the OOM killer killed, in words."""
    return (
        f"{describe_exit(exitcode).split(' (')[0]}: out of memory (the OOM killer killed it "
        "while memory was short; fewer items run at once from now on)"
    )


def item_timeout_error(index: int, item: Any, seconds: float, consequence: str) -> ItemTimeoutError:
    """The error for an item that ran past ``item_timeout=seconds``; ``consequence`` says
    what became of the worker that ran it."""
    return ItemTimeoutError(
        f"{describe_item(index, item)} ran longer than item_timeout={seconds:g}s; {consequence}",
        index,
        seconds,
    )


def attempts_note(attempts: int, earlier: list[str]) -> str:
    """The note on an item's final error when it ran more than once: ``earlier`` holds
    short reprs of what the attempts before the last one raised."""
    return f"fastparallel: {attempts} attempts were made; the earlier ones raised: {', '.join(earlier)}"
