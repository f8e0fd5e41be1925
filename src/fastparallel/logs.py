"""fastparallel's log: the ``fastparallel`` logger, without importing :mod:`logging` for nothing.

Importing :mod:`logging` costs several milliseconds of every script's start. A message
below WARNING can reach nobody in a process that never imported it: no handler can have
been set up, and logging's last-resort handler shows WARNING and above only. Such a
message is dropped there without the import; every other one goes to
``logging.getLogger("fastparallel")`` as usual, attributed to the line that logged it.
"""

from __future__ import annotations

import sys

TYPE_CHECKING = False  # worker processes import this module: no typing at run time
if TYPE_CHECKING:
    from typing import Any

__all__ = ["debug", "info", "warning"]

_DEBUG, _INFO, _WARNING = 10, 20, 30  # logging's levels


def _emit(level: int, message: str, args: tuple[Any, ...], exc_info: bool) -> None:
    if level < _WARNING and "logging" not in sys.modules:
        return
    import logging

    # stacklevel 3: the record names the caller of debug()/info()/warning(), not this module
    logging.getLogger("fastparallel").log(level, message, *args, exc_info=exc_info, stacklevel=3)


def debug(message: str, *args: Any, exc_info: bool = False) -> None:
    """Log at DEBUG on the ``fastparallel`` logger."""
    _emit(_DEBUG, message, args, exc_info)


def info(message: str, *args: Any, exc_info: bool = False) -> None:
    """Log at INFO on the ``fastparallel`` logger."""
    _emit(_INFO, message, args, exc_info)


def warning(message: str, *args: Any, exc_info: bool = False) -> None:
    """Log at WARNING on the ``fastparallel`` logger."""
    _emit(_WARNING, message, args, exc_info)
