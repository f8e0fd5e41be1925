"""How an exception raised in a worker process travels back to the caller.

A worker turns an exception into a *packed* exception, a plain tuple of picklable parts
(:func:`pack_exception`), and reports what failed as an :class:`ErrorKind`. The caller
rebuilds the exception with its original type where it can (:func:`unpack_exception`),
attaches the worker's traceback as ``__cause__``, and adds a note naming the item
(:func:`remote_item_error`). The public exception classes are in :mod:`.errors`.
"""

from __future__ import annotations

import pickle
from enum import IntEnum

from fastparallel.errors import RemoteError, add_note, describe_item, item_error, short_repr

TYPE_CHECKING = False  # worker processes import this module: no typing at run time
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    Dumps = Callable[[Any], bytes]
    PackedException = tuple[Any, ...]

__all__ = [
    "ITEM_NOT_PICKLABLE",
    "ErrorKind",
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


def _picklable_or_repr(value: Any, dumps: Dumps) -> Any:
    try:
        dumps(value)
        return value
    except Exception:
        return short_repr(value)


def pack_exception(exc: BaseException, dumps: Dumps) -> PackedException:
    """Turn ``exc`` into picklable parts; never raises.

    ``dumps`` is the serializer to use (plain pickle with a cloudpickle fallback). An
    exception that pickles and unpickles travels whole; otherwise its class, arguments
    and attributes travel separately, each replaced by a repr where it cannot.
    """
    import traceback

    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    try:
        blob = dumps(exc)
        if _round_trips(blob):
            return ("pickled", blob, tb)
    except Exception:
        pass
    cls = type(exc)
    name = f"{cls.__module__}.{cls.__qualname__}"
    try:
        message = str(exc)
    except Exception:
        message = f"<{cls.__qualname__} whose str() failed>"
    try:
        cls_blob: bytes | None = dumps(cls)
    except Exception:
        cls_blob = None
    try:
        args = tuple(_picklable_or_repr(a, dumps) for a in exc.args)
        state = {k: _picklable_or_repr(v, dumps) for k, v in vars(exc).items()}
        parts_blob: bytes | None = dumps((args, state))
    except Exception:
        parts_blob = None
    return ("rebuilt", cls_blob, parts_blob, name, message, tb)


def _rebuild(packed: PackedException) -> BaseException:
    if packed[0] == "pickled":
        _, blob, tb = packed
        try:
            exc: BaseException = pickle.loads(blob)
            return exc
        except Exception:
            return RemoteError(f"an exception that could not be unpickled:\n{tb}")
    _, cls_blob, parts_blob, name, message, _ = packed
    try:
        cls = pickle.loads(cls_blob) if cls_blob is not None else None
        args, state = pickle.loads(parts_blob) if parts_blob is not None else ((message,), {})
        if isinstance(cls, type) and issubclass(cls, BaseException):
            exc = cls.__new__(cls, *args)
            exc.args = args
            exc.__dict__.update(state)
            return exc
    except Exception:
        pass
    return RemoteError(f"{name}: {message}", type_name=name)


def unpack_exception(packed: PackedException) -> BaseException:
    """Rebuild an exception packed by :func:`pack_exception`, worker traceback as ``__cause__``."""
    exc = _rebuild(packed)
    exc.__cause__ = _RemoteTraceback(f'\n"""\n{packed[-1]}"""')
    return exc


def remote_item_error(
    kind: ErrorKind, packed: PackedException, index: int, item: Any
) -> BaseException:
    """The exception to deliver for an item that failed in a worker process."""
    exc = unpack_exception(packed)
    if kind == ErrorKind.FN:
        return item_error(exc, index, item)
    add_note(exc, _NOTES[kind].format(where=describe_item(index, item)))
    return exc
