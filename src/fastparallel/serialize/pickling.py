"""Serialization between the caller and process workers.

Everything goes through the fast standard :mod:`pickle` first. cloudpickle is used only
where plain pickle cannot do the job: lambdas, closures, and anything defined in
``__main__`` (a notebook, ``python -c``, a script), which a worker process could not
import by name. cloudpickle is imported on first need, not at import time.

Pickles use protocol 5. Given a ``buffers`` list, :func:`dumps` leaves large buffers
(NumPy arrays, and anything whose ``__reduce_ex__`` hands out :class:`pickle.PickleBuffer`)
out of the pickle and appends them to the list; the receiver passes them back to
:func:`loads` (``buffers=``). The process backend moves them through shared memory
(:mod:`.backends.buffers`).
"""

from __future__ import annotations

import pickle

TYPE_CHECKING = False  # worker processes import this module: no typing at run time
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

__all__ = [
    "MAX_OUT_OF_BAND",
    "OUT_OF_BAND_BYTES",
    "dumps",
    "dumps_values",
    "loads",
    "needs_cloudpickle",
]

PROTOCOL = pickle.HIGHEST_PROTOCOL
_MAIN = b"__main__"
# Buffers this large travel out of band: from about here on, shared memory beats copying
# through the pipe (benchmarks/shm_threshold.py; docs/large-data.md has the numbers).
OUT_OF_BAND_BYTES = 1 << 17
MAX_OUT_OF_BAND = 253  # per pickle: the descriptors one message can pass (Linux's SCM_MAX_FD)
_PRESCAN_VALUES = 16  # lists this short are searched for large bytes before pickling
_SCAN_BYTES_PER_VALUE = 1024  # longer ones only when their pickle is this large per value
_BLOB_TYPES = frozenset((bytes, bytearray))

loads = pickle.loads


def _collector(found: list[pickle.PickleBuffer]) -> Callable[[pickle.PickleBuffer], bool]:
    """A ``buffer_callback`` that keeps large contiguous buffers out of band (returns False)."""

    def in_band(buffer: pickle.PickleBuffer) -> bool:
        with memoryview(buffer) as view:
            if (
                view.nbytes < OUT_OF_BAND_BYTES
                or not view.contiguous
                or len(found) >= MAX_OUT_OF_BAND
            ):
                return True
        found.append(buffer)
        return False

    return in_band


def _cloud_dumps(obj: Any, found: list[pickle.PickleBuffer] | None) -> bytes:
    from fastparallel.serialize import byvalue

    if found is not None:
        found.clear()  # from the failed attempt with plain pickle
    try:  # plain __main__ functions without cloudpickle, which takes ~20 ms to import here and there
        return byvalue.dumps(obj, PROTOCOL, None if found is None else _collector(found))
    except Exception:
        pass
    import cloudpickle

    if found is None:
        return cloudpickle.dumps(obj, protocol=PROTOCOL)  # type: ignore[no-any-return]
    found.clear()  # from the failed attempt with plain pickle
    return cloudpickle.dumps(obj, protocol=PROTOCOL, buffer_callback=_collector(found))  # type: ignore[no-any-return]


def needs_cloudpickle(fn: Any) -> bool:
    """Whether pickling ``fn`` will likely need cloudpickle: a hint, not a rule. A plain
    function of ``__main__`` goes by value without it (:mod:`.byvalue`); a closure or a
    lambda of another module needs it.

    Example:
        >>> needs_cloudpickle(len), needs_cloudpickle(lambda x: x)
        (False, True)
    """
    fn = getattr(fn, "func", fn)  # functools.partial
    if getattr(fn, "__closure__", None) is not None:
        return True
    qualname = getattr(fn, "__qualname__", "")
    return "<locals>" in qualname or (
        "<lambda>" in qualname and getattr(fn, "__module__", None) != "__main__"
    )


def dumps(
    obj: Any, main_by_reference: bool = False, buffers: list[pickle.PickleBuffer] | None = None
) -> bytes:
    """Pickle ``obj``; fall back to cloudpickle for what only cloudpickle can carry.

    Plain pickle stores functions and classes by reference. A reference into
    ``__main__`` would not resolve in a worker (notebooks, ``python -c``), so a pickle
    that mentions ``__main__`` is redone with cloudpickle, which stores those by value.
    ``main_by_reference=True`` keeps such references: right for workers forked from this
    process during this call, which have this ``__main__`` as it is now.

    ``buffers``: large buffers are appended to it instead of being copied into the pickle
    (only if pickling succeeds); ``loads(data, buffers=buffers)`` rebuilds ``obj``.

    Example:
        >>> loads(dumps(lambda x: x + 1))(1)
        2
        >>> buffers = []
        >>> data = dumps(pickle.PickleBuffer(bytearray(1 << 20)), buffers=buffers)
        >>> len(data) < 100, len(buffers), memoryview(loads(data, buffers=buffers)).nbytes
        (True, 1, 1048576)
    """
    found: list[pickle.PickleBuffer] | None = None if buffers is None else []
    try:
        data = pickle.dumps(
            obj, protocol=PROTOCOL, buffer_callback=None if found is None else _collector(found)
        )
    except Exception:
        data = _cloud_dumps(obj, found)
    else:
        if not main_by_reference and _MAIN in data:
            data = _cloud_dumps(obj, found)
    if found:
        buffers.extend(found)  # type: ignore[union-attr]
    return data


class _Blob:
    """A large ``bytes`` or ``bytearray``: pickle never offers those to ``buffer_callback``,
    so this hands pickle a :class:`~pickle.PickleBuffer` of it (rebuilt with one copy)."""

    __slots__ = ("value",)

    def __init__(self, value: bytes | bytearray):
        self.value = value

    def __reduce_ex__(self, protocol: Any) -> tuple[Any, ...]:
        return _rebuild_blob, (pickle.PickleBuffer(self.value), type(self.value) is bytearray)


def _rebuild_blob(buffer: Any, mutable: bool) -> bytes | bytearray:
    if not mutable:
        return bytes(buffer)  # no copy if it stayed in band: it is a bytes object then
    if type(buffer) is bytearray:  # it stayed in band
        return buffer
    owner = getattr(buffer, "obj", None)
    if type(owner) is bytearray and buffer.nbytes == len(owner):
        buffer.release()  # the receiver copied the buffer into a bytearray: take that one
        return owner
    return bytearray(buffer)


def _wrap_blobs(values: list[Any]) -> list[Any] | None:
    """``values`` with each large ``bytes`` and ``bytearray`` wrapped in a :class:`_Blob`;
    None if there are none."""
    if _BLOB_TYPES.isdisjoint(map(type, values)):  # the common case, at C speed
        return None
    wrapped: list[Any] | None = None
    for offset, value in enumerate(values):
        if type(value) in _BLOB_TYPES and len(value) >= OUT_OF_BAND_BYTES:
            if wrapped is None:
                wrapped = list(values)
            wrapped[offset] = _Blob(value)
    return wrapped


def dumps_values(
    values: list[Any],
    build: Callable[[list[Any]], Any],
    main_by_reference: bool = False,
    buffers: list[pickle.PickleBuffer] | None = None,
) -> bytes:
    """:func:`dumps` of ``build(values)``; with ``buffers`` (an empty list), large ``bytes``
    and ``bytearray`` among ``values`` travel out of band too (only at the top level).

    Looking for them costs little: a short list is searched before pickling; a long one
    only when its pickle averages ``_SCAN_BYTES_PER_VALUE`` per value (never for a chunk of
    tiny results), and pickled again if one is found.

    Example:
        >>> buffers = []
        >>> data = dumps_values([b"x" * (1 << 20), 1], tuple, buffers=buffers)
        >>> len(data) < 1000, len(buffers), loads(data, buffers=buffers)[1]
        (True, 1, 1)
    """
    if buffers is None:
        return dumps(build(values), main_by_reference)
    wrapped = _wrap_blobs(values) if len(values) <= _PRESCAN_VALUES else None
    data = dumps(build(values if wrapped is None else wrapped), main_by_reference, buffers)
    if wrapped is None and len(data) >= max(OUT_OF_BAND_BYTES, _SCAN_BYTES_PER_VALUE * len(values)):
        wrapped = _wrap_blobs(values)
        if wrapped is not None:
            buffers.clear()
            data = dumps(build(wrapped), main_by_reference, buffers)
    return data
