"""Serialization between the caller and process workers.

Everything goes through the fast standard :mod:`pickle` first. cloudpickle is used only
where plain pickle cannot do the job: lambdas, closures, and anything defined in
``__main__`` (a notebook, ``python -c``, a script), which a worker process could not
import by name. cloudpickle is imported on first need, not at import time.
"""

from __future__ import annotations

import pickle

TYPE_CHECKING = False  # worker processes import this module: no typing at run time
if TYPE_CHECKING:
    from typing import Any

__all__ = ["dumps", "loads"]

PROTOCOL = pickle.HIGHEST_PROTOCOL
_MAIN = b"__main__"

loads = pickle.loads


def _cloud_dumps(obj: Any) -> bytes:
    import cloudpickle

    return cloudpickle.dumps(obj, protocol=PROTOCOL)  # type: ignore[no-any-return]


def dumps(obj: Any, main_by_reference: bool = False) -> bytes:
    """Pickle ``obj``; fall back to cloudpickle for what only cloudpickle can carry.

    Plain pickle stores functions and classes by reference. A reference into
    ``__main__`` would not resolve in a worker (notebooks, ``python -c``), so a pickle
    that mentions ``__main__`` is redone with cloudpickle, which stores those by value.
    ``main_by_reference=True`` keeps such references: right for workers forked from this
    process during this call, which have this ``__main__`` as it is now.

    Example:
        >>> loads(dumps(lambda x: x + 1))(1)
        2
    """
    try:
        data = pickle.dumps(obj, protocol=PROTOCOL)
    except Exception:
        return _cloud_dumps(obj)
    if not main_by_reference and _MAIN in data:
        return _cloud_dumps(obj)
    return data
