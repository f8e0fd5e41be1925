"""How an exception raised in a worker process travels back to the caller.

A worker turns an exception into a *packed* exception, a record of picklable parts
(:func:`pack_exception`, :class:`PackedException`), and reports what failed as an :class:`ErrorKind`. The caller
rebuilds the exception with its original type where it can (:func:`unpack_exception`),
attaches the worker's traceback as ``__cause__``, and adds a note naming the item
(:func:`remote_item_error`). The public exception classes are in :mod:`.errors`.
"""

from __future__ import annotations

import pickle
from collections import namedtuple
from enum import IntEnum

from fastparallel.errors import (
    RemoteError,
    add_note,
    deliverable,
    describe_item,
    item_error,
    set_attribute,
    set_cause,
    short_repr,
)

TYPE_CHECKING = False  # worker processes import this module: no typing at run time
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, NamedTuple

    Dumps = Callable[[Any], bytes]

    class PackedException(NamedTuple):
        """An exception in picklable parts: ``blob``, the whole exception pickled (None
        where it does not round-trip); else ``cls_blob`` (its class) and ``parts_blob``
        (its arguments and attributes), each None where it could not be pickled. ``name``,
        ``message`` and ``traceback`` (the worker's, formatted) always travel."""

        blob: bytes | None
        cls_blob: bytes | None
        parts_blob: bytes | None
        name: str
        message: str
        traceback: str
else:  # worker processes import this module: no typing at run time
    PackedException = namedtuple(
        "PackedException",
        "blob cls_blob parts_blob name message traceback",
        module=__name__,
    )

__all__ = [
    "ITEM_NOT_PICKLABLE",
    "NESTED_MAIN_POOL",
    "ErrorKind",
    "PackedException",
    "pack_exception",
    "remote_item_error",
    "unpack_exception",
]


class ErrorKind(IntEnum):
    """What failed in a worker process."""

    FN = 1  # fn raised
    RESULT = 2  # the result could not be pickled in the worker
    ITEM = 3  # the item could not be pickled in the caller (travels in its slot)
    ITEMS = 4  # the chunk's items could not be unpickled in the worker
    SETUP = 5  # fn, args or kwargs could not be unpickled in the worker


ITEM_NOT_PICKLABLE = (
    "fastparallel: {where} could not be pickled to send it to a worker process; "
    "make it picklable, or use threadpool=True"
)

# The note that says what went wrong, by kind (FN: item_error() names the item).
_NOTES = {
    ErrorKind.RESULT: "fastparallel: the result of {where} could not be pickled to send it back from the worker "
    "process; return picklable data, or use threadpool=True to keep results in this process",
    ErrorKind.ITEM: ITEM_NOT_PICKLABLE,
    ErrorKind.ITEMS: "fastparallel: {where} could not be unpickled in the worker process",
    ErrorKind.SETUP: "fastparallel: fn, args or kwargs could not be unpickled in the worker process "
    "(while running {where})",
}


class _RemoteTraceback(Exception):
    """Carries a worker's formatted traceback; set as ``__cause__`` of the re-raised error
    (as ``concurrent.futures.process._RemoteTraceback`` does)."""

    def __init__(self, tb: str):
        super().__init__(tb)
        self.tb = tb

    def __str__(self) -> str:
        return self.tb


def _round_trips(blob: bytes) -> bool:
    try:
        pickle.loads(blob)
        return True
    except Exception:
        return False


# An exception among another's arguments or attributes (an ExceptionGroup's members, an
# exception kept as an attribute) that cannot travel whole travels packed, as this.
_Nested = namedtuple("_Nested", "packed", module=__name__)
_NESTING = 4  # exceptions inside exceptions are packed this deep, then stand as reprs


def _portable(value: Any, dumps: Dumps, depth: int) -> Any:
    """``value`` if it pickles and unpickles; else an exception packed, a list or tuple of
    portable values, or its short repr."""
    try:
        if _round_trips(dumps(value)):
            return value
    except Exception:
        pass
    if depth < _NESTING:
        if isinstance(value, BaseException):
            return _Nested(pack_exception(value, dumps, depth + 1))
        if type(value) in (list, tuple):
            return type(value)(_portable(v, dumps, depth + 1) for v in value)
    return short_repr(value)


def _restore(value: Any) -> Any:
    """The inverse of :func:`_portable`, in the caller."""
    if isinstance(value, _Nested):
        return unpack_exception(value.packed)
    if type(value) in (list, tuple):
        return type(value)(_restore(v) for v in value)
    return value


def _format_traceback(exc: BaseException) -> str:
    import traceback

    try:
        return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    except Exception as failed:  # a hostile __notes__ or __cause__: the frames at least
        frames = "".join(traceback.format_tb(exc.__traceback__))
        return f"Traceback (most recent call last):\n{frames}<formatting it failed: {failed!r}>\n"


def _parts(exc: BaseException, dumps: Dumps, depth: int) -> bytes | None:
    """``exc``'s arguments and attributes pickled, each made portable (:func:`_portable`)
    where it cannot travel as it is; None where even that fails."""
    try:
        args = tuple(_portable(a, dumps, depth) for a in exc.args)
        state = {k: _portable(v, dumps, depth) for k, v in vars(exc).items()}
        return dumps((args, state))
    except Exception:
        return None


def pack_exception(exc: BaseException, dumps: Dumps, depth: int = 0) -> PackedException:
    """Turn ``exc`` into a :class:`PackedException`; never raises.

    ``dumps`` is the serializer to use (plain pickle with a cloudpickle fallback). An
    exception that pickles and unpickles travels whole; otherwise (its ``__reduce__``
    raises, an attribute cannot be pickled, its constructor needs other arguments than
    ``args``, it refuses ``__setstate__``) its class, arguments and attributes travel
    separately, each replaced by a repr where it cannot. Its name, message and
    traceback always travel, for the :class:`~fastparallel.RemoteError` that stands in
    when nothing else can be rebuilt in the caller. Exceptions among its arguments and
    attributes (an ``ExceptionGroup``'s) are packed alike, ``depth`` levels down already.
    """
    cls = type(exc)
    name = f"{cls.__module__}.{cls.__qualname__}"
    try:
        message = str(exc)
    except Exception:
        message = f"<{cls.__qualname__} whose str() failed>"
    tb = _format_traceback(exc)
    try:
        blob: bytes | None = dumps(exc)
    except Exception:
        blob = None
    if blob is not None and _round_trips(blob):
        return PackedException(blob, None, None, name, message, tb)
    try:
        cls_blob: bytes | None = dumps(cls)
    except Exception:
        cls_blob = None
    return PackedException(None, cls_blob, _parts(exc, dumps, depth), name, message, tb)


def _rebuild(packed: PackedException) -> BaseException | None:
    """The exception of ``packed`` with its original class, or None where it cannot be."""
    if packed.blob is not None:
        try:
            exc: BaseException = pickle.loads(packed.blob)
            return exc
        except KeyboardInterrupt:  # a real Ctrl-C, here
            raise
        except BaseException:  # its class or an attribute is not importable here
            return None
    try:
        cls = pickle.loads(packed.cls_blob) if packed.cls_blob is not None else None
        if packed.parts_blob is None:
            args, state = (packed.message,), {}
        else:
            args, state = pickle.loads(packed.parts_blob)
            args = _restore(args)
            state = {k: _restore(v) for k, v in state.items()}
        if isinstance(cls, type) and issubclass(cls, BaseException):
            # As pickle rebuilds an exception, without calling __init__ (which may need
            # other arguments) or __setattr__ (which a frozen dataclass refuses).
            exc = cls.__new__(cls, *args)
            set_attribute(exc, "args", args)
            exc.__dict__.update(state)
            return exc
    except KeyboardInterrupt:
        raise
    except BaseException:
        pass
    return None


def unpack_exception(packed: PackedException) -> BaseException:
    """Rebuild an exception packed by :func:`pack_exception`, worker traceback as
    ``__cause__``: with its original class where it can be, else a
    :class:`~fastparallel.RemoteError` naming it. Never raises."""
    exc = _rebuild(packed)
    if exc is None:
        exc = RemoteError(f"{packed.name}: {packed.message}", type_name=packed.name)
    set_cause(exc, _RemoteTraceback(f'\n"""\n{packed.traceback}"""'))
    return exc


NESTED_MAIN_POOL = (
    "fastparallel: fn ran in a worker process, whose __main__ is not your script (workers "
    "do not import it), so a function defined in the script cannot be found there by name: "
    "a pool started inside fn (multiprocessing.Pool, ProcessPoolExecutor) cannot pickle it "
    "for its own workers. Define that function in a module and import it, or call "
    "fastparallel.parallel() inside fn instead (it sends __main__ functions by value, "
    "with cloudpickle), or run the outer call with threadpool=True"
)


def _names_main(exc: BaseException) -> bool:
    """Whether ``exc`` is pickle failing to find an object of ``__main__`` by name."""
    if not isinstance(exc, (pickle.PicklingError, AttributeError, RemoteError)):
        return False
    if isinstance(exc, RemoteError) and "Pickl" not in exc.type_name:
        return False
    try:
        return "__main__" in str(exc)
    except Exception:
        return False


def remote_item_error(
    kind: ErrorKind, packed: PackedException, index: int, item: Any
) -> BaseException:
    """The exception to deliver for an item that failed in a worker process."""
    exc = unpack_exception(packed)
    if kind == ErrorKind.FN:
        if _names_main(exc):  # a pool nested in fn, handed a function of the script
            add_note(exc, NESTED_MAIN_POOL)
        return item_error(exc, index, item)
    note = _NOTES[kind].format(where=describe_item(index, item))
    return deliverable(exc, note.removeprefix("fastparallel: "))
